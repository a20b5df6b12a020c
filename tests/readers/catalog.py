"""What both reader scripts share: the catalog options and opening the catalog, with the S3
settings of an s3:// warehouse (path-style addressing, as Ceph's gateway needs). An http://
or https:// catalog URI is an Iceberg REST catalog; anything else a SQL catalog's database."""

from urllib.parse import urlparse


def add_catalog_args(parser):
    parser.add_argument("--catalog-uri", required=True)
    parser.add_argument("--catalog-name", default="cdc")
    parser.add_argument("--table", required=True)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--s3-access-key")
    parser.add_argument("--s3-secret-key")
    parser.add_argument("--s3-region", default="us-east-1")


def is_rest(args):
    return args.catalog_uri.startswith(("http://", "https://"))


def open_catalog(args):
    props = {"uri": args.catalog_uri}
    if args.s3_endpoint:
        props.update({
            "s3.endpoint": args.s3_endpoint,
            "s3.access-key-id": args.s3_access_key,
            "s3.secret-access-key": args.s3_secret_key,
            "s3.region": args.s3_region,
            "s3.force-virtual-addressing": "false",
        })
    if is_rest(args):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(args.catalog_name, **props)
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(args.catalog_name, **props)


def duckdb_attach_rest(con, args):
    """Attaches the REST catalog to DuckDB (its iceberg extension speaks REST) as `rest_cat`."""
    quote = lambda v: "'" + v.replace("'", "''") + "'"
    con.execute(
        f"ATTACH {quote(args.catalog_name)} AS rest_cat "
        f"(TYPE iceberg, ENDPOINT {quote(args.catalog_uri)}, AUTHORIZATION_TYPE 'none')"
    )


def duckdb_s3_secret(con, args):
    """Points DuckDB's httpfs at the same store."""
    if not args.s3_endpoint:
        return
    endpoint = urlparse(args.s3_endpoint)
    con.execute(
        "CREATE SECRET cdc_s3 (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, "
        "URL_STYLE 'path', USE_SSL ?)",
        [args.s3_access_key, args.s3_secret_key, args.s3_region, endpoint.netloc,
         endpoint.scheme == "https"],
    )
