"""Times a DuckDB full scan of an Iceberg table (its iceberg extension, offline): the best of
three runs of a query that reads every column of every live row, position deletes applied.

Usage: duckdb_scan.py METADATA_JSON_PATH   ->   {"seconds": s, "rows": n}
"""

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "readers"))
from read_table import extension  # noqa: E402


def main():
    import duckdb

    path = sys.argv[1]
    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    con.execute(f"LOAD '{extension('avro')}'")
    con.execute(f"LOAD '{extension('iceberg')}'")
    best = None
    rows = None
    for _ in range(3):
        started = time.perf_counter()
        rows = con.execute(
            f"SELECT count(*), max(COLUMNS(*)) FROM iceberg_scan('{path}')").fetchone()[0]
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
    json.dump({"seconds": best, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
