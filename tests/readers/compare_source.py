"""Compares Iceberg tables with the PostgreSQL tables they come from: `SELECT *` of each
source table against the same table read by PyIceberg, DuckDB and Spark SQL (through
spark_service.py), value by value in a form decided by the source column's type:

    python compare_source.py --source-dsn 'host=127.0.0.1 port=55432 dbname=src user=postgres' \
        --catalog-uri sqlite:////tmp/x/catalog.db --catalog-name cdc \
        --spark 127.0.0.1:29095 --spark-uri sqlite:///tmp/x/catalog.db \
        --spark-warehouse file:///tmp/x/warehouse \
        --tables public.accounts=public.accounts,public.order_lines=public.order_lines

Prints {"<source table>": {"rows": N, "pyiceberg": "equal" | "<what differs>", ...}}.

How each PostgreSQL type compares (the reader's value, then the source's, in one form):
  integer, bigint, smallint, boolean, text  as they are
  numeric(p,s)          decimal text with the column's scale ('12.30')
  numeric (no scale)    the same number (we store its text; Debezium's streaming drops
                        trailing zeros, 52.9070 arrives as 52.907, its snapshot keeps them)
  real                  the same 32-bit float; double precision: the same 64-bit float
  timestamptz           the instant in UTC, microseconds; timestamp: wall clock, microseconds
  date, time            ISO text, microseconds (time may be stored as a string)
  jsonb                 the same JSON value (parsed, keys sorted)
  text[]                the same list (we store the JSON text of the array)
  bytea                 the same bytes; uuid: lower-case text
"""

import argparse
import base64
import decimal
import json
import socket
import struct
import sys

import psycopg2

from catalog import duckdb_s3_secret
from read_table import extension, normalize


def canonical(pg_type, value):
    if value is None:
        return None
    if pg_type == "real":
        return struct.unpack("f", struct.pack("f", float(value)))[0]
    if pg_type == "numeric":
        # no scale of its own: Debezium's streaming sends the value without trailing zeros
        return format(decimal.Decimal(str(value)).normalize(), "f")
    if pg_type.startswith("numeric"):
        return format(decimal.Decimal(str(value)), "f")
    if pg_type == "jsonb" or pg_type == "json":
        parsed = json.loads(value) if isinstance(value, str) else value
        return json.dumps(parsed, sort_keys=True)
    if pg_type.endswith("[]"):
        items = json.loads(value) if isinstance(value, str) else value
        return json.dumps([normalize(i) for i in items])
    if pg_type.startswith("timestamp with time zone"):
        return normalize(value).rstrip("Z") if not isinstance(value, str) else value.rstrip("Z")
    if pg_type == "bytea" and isinstance(value, str):
        return value  # already base64 (normalize)
    return normalize(value)


def source_rows(dsn, table):
    schema, name = table.split(".", 1)
    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", (f'"{schema}"."{name}"',))
        types = dict(cur.fetchall())
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (f'"{schema}"."{name}"',))
        key = sorted(r[0] for r in cur.fetchall())
        columns = list(types)
        quoted = ", ".join(f'"{c}"' for c in columns)
        cur.execute(f'SELECT {quoted} FROM "{schema}"."{name}"')
        rows = [dict(zip(columns, r)) for r in cur.fetchall()]
    return types, key, rows


def put_in_form(types, rows):
    return [{c: canonical(types[c], r.get(c)) for c in types} for r in rows]


def sort(key, rows):
    return sorted(rows, key=lambda r: json.dumps([r[k] for k in key]))


def differences(key, want, got):
    if want == got:
        return "equal"
    by_key = lambda rows: {json.dumps([r[k] for k in key]): r for r in rows}
    w, g = by_key(want), by_key(got)
    missing = [k for k in w if k not in g]
    extra = [k for k in g if k not in w]
    short = lambda v: v if not isinstance(v, str) or len(v) < 80 else f"{v[:40]}…({len(v)} chars)"
    changed = [(k, {c: (short(w[k][c]), short(g[k].get(c))) for c in w[k] if w[k][c] != g[k].get(c)})
               for k in w if k in g and w[k] != g[k]]
    return (f"{len(got)} rows, {len(want)} in the source; missing {missing[:5]}; "
            f"not in the source {extra[:5]}; {len(changed)} differ (source, reader): {changed[:3]}")


class Spark:
    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.file = socket.create_connection((host, int(port))).makefile("rw")

    def query(self, catalog, sql):
        self.file.write(json.dumps({"catalog": catalog, "sql": sql}) + "\n")
        self.file.flush()
        reply = json.loads(self.file.readline())
        if "error" in reply:
            raise SystemExit(f"Spark: {reply['error']}\n{reply.get('trace', '')}")
        return reply["rows"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-dsn", required=True)
    parser.add_argument("--catalog-uri", required=True, help="SQLAlchemy form, for PyIceberg")
    parser.add_argument("--catalog-name", default="cdc")
    parser.add_argument("--tables", required=True, help="source=iceberg,...")
    parser.add_argument("--spark", help="host:port of spark_service.py")
    parser.add_argument("--spark-uri", help="our catalog URI, for Spark's JdbcCatalog")
    parser.add_argument("--spark-warehouse")
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--s3-access-key")
    parser.add_argument("--s3-secret-key")
    parser.add_argument("--s3-region", default="us-east-1")
    args = parser.parse_args()

    from catalog import open_catalog
    args.table = None
    catalog = open_catalog(args)
    import duckdb
    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    con.execute(f"LOAD '{extension('avro')}'")
    con.execute(f"LOAD '{extension('iceberg')}'")
    if args.s3_endpoint:
        con.execute(f"LOAD '{extension('httpfs')}'")
        duckdb_s3_secret(con, args)
    spark = Spark(args.spark) if args.spark else None
    spark_catalog = {"name": args.catalog_name, "uri": args.spark_uri,
                     "warehouse": args.spark_warehouse, "s3": None}
    if args.s3_endpoint:
        spark_catalog["s3"] = {"endpoint": args.s3_endpoint, "access_key": args.s3_access_key,
                               "secret_key": args.s3_secret_key, "region": args.s3_region}

    report = {}
    for pair in args.tables.split(","):
        source, target = pair.split("=")
        types, key, rows = source_rows(args.source_dsn, source)
        want = sort(key, put_in_form(types, rows))
        columns = list(types)
        table = catalog.load_table(target)
        readers = {}
        arrow = table.scan(selected_fields=tuple(columns)).to_arrow()
        readers["pyiceberg"] = arrow.to_pylist()
        location = table.metadata_location
        path = location[len("file://"):] if location.startswith("file://") else location
        quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        result = con.execute(f"SELECT {quoted} FROM iceberg_scan('{path}')").fetchall()
        readers["duckdb"] = [dict(zip(columns, r)) for r in result]
        if spark:
            ticked = ", ".join(f"`{c}`" for c in columns)
            readers["spark"] = spark.query(spark_catalog, f"SELECT {ticked} FROM {args.catalog_name}.{target}")
        entry = {"rows": len(want)}
        for reader, got in readers.items():
            entry[reader] = differences(key, want, sort(key, put_in_form(types, got)))
        report[source] = entry
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
