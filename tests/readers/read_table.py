"""Reads one Iceberg table with two independent readers, PyIceberg and DuckDB, and prints
its rows as JSON, each value in the CDC record's normalized form, so a test can compare
them with its model:

    python read_table.py --catalog-uri sqlite:////tmp/x/catalog.db --table public.items \
        --columns id,name,amount

Output: {"pyiceberg": [...rows...], "duckdb": [...rows...], "metadata_location": "..."}.
DuckDB runs offline: its iceberg and avro extensions come from the
duckdb-extension-* packages.
"""

import argparse
import base64
import datetime
import decimal
import importlib
import json
import pathlib
import sys
import uuid

from catalog import add_catalog_args, duckdb_attach_rest, duckdb_s3_secret, is_rest, open_catalog


def normalize(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        text = value.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")
        if value.tzinfo is not None:
            offset = value.utcoffset() or datetime.timedelta(0)
            text = (value.replace(tzinfo=None) - offset).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        return text
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.strftime("%H:%M:%S.%f")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot normalize {type(value).__name__}: {value!r}")


def extension(name):
    module = importlib.import_module(f"duckdb_extension_{name}")
    found = sorted(pathlib.Path(module.__file__).parent.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise SystemExit(f"the {name} extension file is missing from duckdb_extension_{name}")
    return str(found[-1])


def main():
    parser = argparse.ArgumentParser()
    add_catalog_args(parser)
    parser.add_argument("--columns", required=True)
    args = parser.parse_args()
    columns = args.columns.split(",")

    table = open_catalog(args).load_table(args.table)
    arrow = table.scan(selected_fields=tuple(columns)).to_arrow()
    py_rows = [{c: normalize(r[c]) for c in columns} for r in arrow.to_pylist()]

    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    con.execute(f"LOAD '{extension('avro')}'")
    con.execute(f"LOAD '{extension('iceberg')}'")
    if args.s3_endpoint or is_rest(args):
        con.execute(f"LOAD '{extension('httpfs')}'")
        duckdb_s3_secret(con, args)
    location = table.metadata_location
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    if is_rest(args):
        # DuckDB asks the REST catalog itself where the table is
        duckdb_attach_rest(con, args)
        name = ".".join('"' + p.replace('"', '""') + '"' for p in args.table.split("."))
        result = con.execute(f"SELECT {quoted} FROM rest_cat.{name}").fetchall()
    else:
        path = location[len("file://"):] if location.startswith("file://") else location
        result = con.execute(f"SELECT {quoted} FROM iceberg_scan('{path}')").fetchall()
    duck_rows = [{c: normalize(v) for c, v in zip(columns, row)} for row in result]

    json.dump({"pyiceberg": py_rows, "duckdb": duck_rows, "metadata_location": location}, sys.stdout)


if __name__ == "__main__":
    main()
