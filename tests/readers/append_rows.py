"""Appends rows to an Iceberg table with PyIceberg: a foreign writer committing to a table
the connector also writes, to make its compare-and-swap lose; with --create, an analyst's
own table in the connector's catalog.

    python append_rows.py --catalog-uri URI --catalog-name NAME --table ns.t --rows '[{...}]' [--create LOCATION]

Each row is a JSON object of column values; dates as YYYY-MM-DD, decimals as strings,
timestamps as ISO-8601.
"""

import argparse
import datetime
import decimal
import json

import pyarrow as pa
from catalog import add_catalog_args, open_catalog


def convert(value, arrow_type):
    if value is None:
        return None
    if pa.types.is_decimal(arrow_type):
        return decimal.Decimal(value)
    if pa.types.is_date(arrow_type):
        return datetime.date.fromisoformat(value)
    if pa.types.is_timestamp(arrow_type):
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def main():
    parser = argparse.ArgumentParser()
    add_catalog_args(parser)
    parser.add_argument("--rows", required=True)
    parser.add_argument("--create", metavar="LOCATION", help="create the table from the rows first, at LOCATION")
    args = parser.parse_args()
    catalog = open_catalog(args)
    if args.create:
        namespace = args.table.rsplit(".", 1)[0]
        if (namespace,) not in catalog.list_namespaces():
            catalog.create_namespace(namespace)
        schema = pa.Table.from_pylist(json.loads(args.rows)).schema
        catalog.create_table(args.table, schema=schema, location=args.create)
    table = catalog.load_table(args.table)
    schema = table.schema().as_arrow()
    rows = json.loads(args.rows)
    columns = {
        field.name: pa.array([convert(r.get(field.name), field.type) for r in rows], type=field.type)
        for field in schema
    }
    table.append(pa.table(columns, schema=schema))


if __name__ == "__main__":
    main()
