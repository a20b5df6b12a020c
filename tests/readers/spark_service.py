"""Spark SQL as a reader (and foreign writer) of our Iceberg tables, one SparkSession for the
whole test run (its start-up takes many seconds): a line of JSON in, a line of JSON out, over
TCP on loopback. Started by tests/spark.sh.

    {"catalog": {"name": "cdc", "uri": "sqlite:///tmp/x/catalog.db",
                 "warehouse": "file:///tmp/x/warehouse", "s3": null},
     "sql": "SELECT * FROM cdc.public.items"}
 -> {"columns": [...], "rows": [{...}, ...]}  or  {"error": "..."}

A catalog is registered under its own name (the JdbcCatalog looks its tables up by that
name) when a request names it with other settings than before (Iceberg's
JdbcCatalog over the same SQLite or PostgreSQL database as ours, its RESTCatalog for an
http:// URI, S3FileIO for an s3:// warehouse); values are put in the tests' normalized form (read_table.normalize).
"""

import argparse
import glob
import json
import os
import socketserver
import threading
import traceback
from urllib.parse import urlparse

from read_table import normalize

SESSION = None
LOCK = threading.Lock()
KNOWN = {}
# the Spark settings made for each catalog name
SET = {}


def jdbc_uri(uri):
    if uri.startswith("sqlite://"):
        return "jdbc:sqlite:" + uri[len("sqlite://"):]
    parsed = urlparse(uri)
    if parsed.scheme in ("postgres", "postgresql"):
        user = f"?user={parsed.username}" if parsed.username else ""
        if parsed.password:
            user += f"&password={parsed.password}"
        return f"jdbc:postgresql://{parsed.hostname}:{parsed.port or 5432}{parsed.path}{user}"
    raise ValueError(f"no JDBC form for catalog URI {uri}")


def register(catalog):
    name = catalog["name"]
    key = json.dumps(catalog, sort_keys=True)
    if KNOWN.get(name) == key:
        return
    if name in KNOWN:
        # Iceberg's JdbcCatalog finds its tables under its own name, so a second database
        # of the same catalog name takes the place of the first (Spark caches catalogs)
        SESSION._jsparkSession.sessionState().catalogManager().reset()
    prefix = f"spark.sql.catalog.{name}"
    if catalog["uri"].startswith(("http://", "https://")):
        # an Iceberg REST catalog: Iceberg's RESTCatalog asks the server
        conf = {
            prefix: "org.apache.iceberg.spark.SparkCatalog",
            f"{prefix}.type": "rest",
            f"{prefix}.uri": catalog["uri"],
            f"{prefix}.warehouse": catalog["warehouse"],
            f"{prefix}.cache-enabled": "false",
        }
    else:
        conf = {
            prefix: "org.apache.iceberg.spark.SparkCatalog",
            f"{prefix}.type": "jdbc",
            f"{prefix}.uri": jdbc_uri(catalog["uri"]),
            f"{prefix}.warehouse": catalog["warehouse"],
            # our catalog tables are the SQL catalog's first schema (no view support needed)
            f"{prefix}.jdbc.schema-version": "V0",
            f"{prefix}.cache-enabled": "false",
        }
    s3 = catalog.get("s3")
    if s3:
        conf.update({
            f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
            f"{prefix}.s3.endpoint": s3["endpoint"],
            f"{prefix}.s3.access-key-id": s3["access_key"],
            f"{prefix}.s3.secret-access-key": s3["secret_key"],
            f"{prefix}.s3.path-style-access": "true",
            f"{prefix}.client.region": s3.get("region", "us-east-1"),
        })
    # settings of the earlier catalog of this name that this one lacks (S3 ones) go
    for k in SET.get(name, {}):
        if k not in conf:
            SESSION.conf.unset(k)
    for k, v in conf.items():
        SESSION.conf.set(k, v)
    KNOWN[name] = key
    SET[name] = conf


def answer(request):
    with LOCK:
        register(request["catalog"])
        frame = SESSION.sql(request["sql"])
        columns = frame.columns
        rows = [{c: normalize(v) for c, v in zip(columns, row)} for row in frame.collect()]
        return {"columns": columns, "rows": rows}


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            try:
                reply = answer(json.loads(line))
            except Exception as e:  # the error goes back to the test, the service stays up
                reply = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-4000:]}
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    global SESSION
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jars", required=True, help="the directory of the Iceberg jars")
    args = parser.parse_args()
    os.environ["TZ"] = "UTC"
    from pyspark.sql import SparkSession

    jars = ",".join(sorted(glob.glob(os.path.join(args.jars, "*.jar"))))
    SESSION = (
        SparkSession.builder.master("local[2]")
        .appName("cdc-tests")
        .config("spark.jars", jars)
        .config("spark.sql.extensions",
                "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    SESSION.sparkContext.setLogLevel("WARN")
    with Server(("127.0.0.1", args.port), Handler) as server:
        print(f"spark {SESSION.version} ready on 127.0.0.1:{args.port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
