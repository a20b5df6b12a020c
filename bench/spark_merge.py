"""The job our users run today, as the seed job did it: PySpark (local[2], Iceberg's Spark
runtime) taking the Debezium stream in micro-batches and, per batch, parsing the JSON
(`from_json` with the schema the messages carry), keeping the newest event per key with a
window function, then `MERGE INTO` the table (delete when the newest event is a delete,
update when matched, insert when not), an Iceberg table in a SQL catalog (Iceberg's
JdbcCatalog on SQLite) and local warehouse, partitioned by year and month as the old job's
table was (identity partitions on `year` and `month` columns, here of the date column ours
partitions by). Spark's defaults otherwise (copy-on-write merges, adaptive execution), with
2 GB for the driver.

Each batch's values are written to a JSON-lines file that Spark reads itself (the old job
read Kafka inside the JVM; handing rows over py4j would time Python, not Spark). Stops after
a time budget; then reads the table back and checks every column of every row against what
the processed events leave.

Usage: spark_merge.py --input F --dir D --batch N --events M --budget SECONDS --jars DIR
Prints {"events", "seconds", "startup_seconds", "batches", "rows", "equals_model",
"jvm_peak_rss"} as JSON.
"""

from contender import contender_args
import glob
import json
import os
import sys
import time

KEY = "id"


def spark_type(connect_type):
    from pyspark.sql import types as T

    return {
        "int8": T.IntegerType(), "int16": T.IntegerType(), "int32": T.IntegerType(),
        "int64": T.LongType(), "float": T.DoubleType(), "float32": T.DoubleType(),
        "double": T.DoubleType(), "float64": T.DoubleType(), "boolean": T.BooleanType(),
    }.get(connect_type, T.StringType())


def payload_schema(first_message):
    """The Spark schema of the payload, from the Connect schema the message carries."""
    from pyspark.sql import types as T

    schema = first_message["schema"]
    fields = {f["field"]: f for f in schema["fields"]}
    row = T.StructType([
        T.StructField(f["field"], spark_type(f["type"]), True) for f in fields["after"]["fields"]
    ])
    columns = [f.name for f in row.fields]
    payload = T.StructType([
        T.StructField("before", row, True),
        T.StructField("after", row, True),
        T.StructField("op", T.StringType(), True),
        T.StructField("ts_ms", T.LongType(), True),
    ])
    return T.StructType([T.StructField("payload", payload, True)]), row, columns


def jvm_peak_rss(spark):
    pid = spark._jvm.java.lang.ProcessHandle.current().pid()
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    p = contender_args()
    p.add_argument("--jars", required=True)
    args = p.parse_args()
    os.environ["TZ"] = "UTC"

    started = time.perf_counter()
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    jars = ",".join(sorted(glob.glob(os.path.join(args.jars, "*.jar"))))
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("merge-into-job")
        .config("spark.jars", jars)
        .config("spark.driver.memory", "2g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.extensions",
                "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.sql.catalog.bench", "org.apache.iceberg.spark.SparkCatalog")
        .config("spark.sql.catalog.bench.type", "jdbc")
        .config("spark.sql.catalog.bench.uri", f"jdbc:sqlite:{args.dir}/catalog.db")
        .config("spark.sql.catalog.bench.warehouse", f"file://{args.dir}/warehouse")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - started

    table = "bench.public.peer"
    schema = columns = None
    model = {}
    processed = batches = 0
    batch_file = os.path.join(args.dir, "batch.jsonl")
    began = time.perf_counter()
    with open(args.input) as f:
        pending = []
        for line in f:
            _, _, value = line.rstrip("\n").partition("\t")
            if not value:
                continue  # a tombstone
            pending.append(value)
            processed += 1
            last = processed >= args.events
            if len(pending) < args.batch and not last:
                continue
            if schema is None:
                first = json.loads(pending[0])
                if "schema" not in first:
                    sys.exit("spark_merge.py needs the JSON converter's schemas in the messages")
                schema, row_type, columns = payload_schema(first)
                date = F.date_add(F.lit("1970-01-01").cast("date"), F.col("listed_on"))
                ddl = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in row_type.fields)
                spark.sql(
                    f"CREATE TABLE {table} ({ddl}, operation string, processing_time timestamp, "
                    f"year int, month int) USING iceberg PARTITIONED BY (year, month)"
                )
            # the model: each processed event in order
            for value in pending:
                ev = json.loads(value)["payload"]
                if ev["op"] == "d":
                    model.pop(ev["before"][KEY], None)
                else:
                    model[ev["after"][KEY]] = ev["after"]
            with open(batch_file, "w") as out:
                for seq, value in enumerate(pending):
                    out.write(json.dumps({"seq": seq, "value": value}) + "\n")
            parsed = (
                spark.read.schema("seq long, value string").json(batch_file)
                .select("seq", F.from_json("value", schema).alias("m"))
                .select("seq", "m.payload.*")
                .withColumn("key", F.coalesce(F.col(f"after.{KEY}"), F.col(f"before.{KEY}")))
            )
            newest = (
                parsed.withColumn("n", F.row_number().over(
                    Window.partitionBy("key").orderBy(F.col("seq").desc())))
                .where("n = 1")
            )
            source = newest.select(
                *[F.coalesce(F.col(f"after.{c}"), F.col(f"before.{c}")).alias(c) for c in columns],
                F.col("op").alias("operation"),
                F.current_timestamp().alias("processing_time"),
            ).withColumn("year", F.year(date)).withColumn("month", F.month(date))
            source.createOrReplaceTempView("changes")
            spark.sql(
                f"MERGE INTO {table} t USING changes s ON t.`{KEY}` = s.`{KEY}` "
                "WHEN MATCHED AND s.operation = 'd' THEN DELETE "
                "WHEN MATCHED THEN UPDATE SET * "
                "WHEN NOT MATCHED AND s.operation != 'd' THEN INSERT *"
            )
            batches += 1
            pending = []
            if last or time.perf_counter() - began > args.budget:
                break
    seconds = time.perf_counter() - began
    got = {}
    for r in spark.table(table).select(*columns).collect():
        row = r.asDict()
        got[row[KEY]] = row
    json.dump({
        "events": processed, "seconds": seconds, "startup_seconds": startup,
        "batches": batches, "rows": len(got), "equals_model": got == model,
        "jvm_peak_rss": jvm_peak_rss(spark),
    }, sys.stdout)
    spark.stop()


if __name__ == "__main__":
    main()
