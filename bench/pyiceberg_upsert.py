"""The peer a Python user would pick: PyIceberg's Table.upsert() (and delete() for deletes)
fed the same Debezium stream in batches, each batch de-duplicated to the newest change per
key, into a SQLite catalog and local warehouse partitioned like ours. Stops after a time
budget; checks the table (read back by PyIceberg) against what the processed events leave.

Usage: pyiceberg_upsert.py --input F --dir D --batch N --events M --budget SECONDS
Prints {"events": n, "seconds": s, "batches": b, "rows": r, "equals_model": bool}.
"""

from contender import contender_args
import datetime
import json
import sys
import time


def rows_of(line):
    key, _, value = line.rstrip("\n").partition("\t")
    if not value:
        return None  # tombstone
    v = json.loads(value)
    payload = v.get("payload", v) if "schema" in v else v
    return payload


EPOCH = datetime.date(1970, 1, 1)


def main():
    p = contender_args()
    args = p.parse_args()

    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.expressions import In
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import MonthTransform

    catalog = SqlCatalog("bench", uri=f"sqlite:///{args.dir}/catalog.db",
                         warehouse=f"file://{args.dir}/warehouse")
    catalog.create_namespace_if_not_exists("public")

    table = None
    columns = None
    model = {}
    processed = 0
    batches = 0
    started = time.perf_counter()
    with open(args.input) as f:
        batch = []
        for line in f:
            payload = rows_of(line)
            if payload is None:
                continue
            batch.append(payload)
            processed += 1
            last = processed >= args.events
            if len(batch) >= args.batch or last:
                newest = {}
                for ev in batch:
                    row = ev["after"] if ev["op"] != "d" else None
                    key = (ev["after"] or ev["before"])["id"]
                    newest[key] = row
                upserts = []
                for key, row in newest.items():
                    if row is None:
                        continue
                    row = dict(row)
                    row["listed_on"] = EPOCH + datetime.timedelta(days=row["listed_on"])
                    upserts.append(row)
                deletes = [k for k, r in newest.items() if r is None]
                if table is None:
                    columns = list(upserts[0].keys())
                    arrow = pa.Table.from_pylist(upserts)
                    fields = [f.with_nullable(f.name != "id") for f in arrow.schema]
                    schema = pa.schema(fields)
                    table = catalog.create_table("public.peer", schema=schema)
                    with table.update_spec() as spec:
                        spec.add_field("listed_on", MonthTransform(), "listed_on_month")
                    table = catalog.load_table("public.peer")
                    arrow_schema = schema
                if upserts:
                    table.upsert(pa.Table.from_pylist(upserts, schema=arrow_schema),
                                 join_cols=["id"])
                if deletes:
                    table.delete(In("id", deletes))
                for key, row in newest.items():
                    if row is None:
                        model.pop(key, None)
                    else:
                        model[key] = row["name"]
                batches += 1
                batch = []
                if last or time.perf_counter() - started > args.budget:
                    break
    seconds = time.perf_counter() - started
    got = {r["id"]: r["name"] for r in table.scan(selected_fields=("id", "name")).to_arrow().to_pylist()}
    json.dump({"events": processed, "seconds": seconds, "batches": batches,
               "rows": len(got), "equals_model": got == model}, sys.stdout)


if __name__ == "__main__":
    main()
