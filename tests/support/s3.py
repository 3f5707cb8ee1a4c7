"""A real S3-compatible server for the tests: moto's standalone server on loopback.

Each :class:`S3Server` is a ``moto_server`` subprocess (its own objects, in its
memory) with one bucket; tests read and change objects behind the gateway's
back through :attr:`S3Server.client` (boto3).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from gateway.devtools.openssh_target import free_port, wait_for_port

ACCESS_KEY = "pamgate-test-key"
SECRET_KEY = "pamgate-test-secret"
BUCKET = "pamgate-recordings"
PREFIX = "cluster-1"


@dataclass
class S3Server:
    """A running moto server and a client of it."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip

    def config(self, *, interval: float = 1.0, extra: str = "", from_env: bool = False) -> str:
        """The ``[recordings]`` settings of a node that stores recordings here.

        ``from_env``: leave the endpoint and credentials to the AWS environment
        variables (see :meth:`environment`).
        """
        where = (
            ""
            if from_env
            else f"""s3_endpoint_url = "{self.endpoint}"
s3_access_key_id = "{ACCESS_KEY}"
s3_secret_access_key = "{SECRET_KEY}"
"""
        )
        return f"""
[recordings]
url = "s3://{BUCKET}/{PREFIX}"
{where}s3_upload_interval_seconds = {interval}
s3_timeout_seconds = 1
{extra}"""

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point a client here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
        }  # fmt: skip

    def names(self, prefix: str = PREFIX) -> list[str]:
        """Every object under ``prefix``, sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=BUCKET, Key=name)["Body"].read())

    def stop(self) -> None:
        """Stop the server (its objects are lost): the store goes away."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def s3_server(root: Path, *, object_lock: bool = False) -> Iterator[S3Server]:
    """A moto server on a free loopback port with the bucket made (object lock if asked)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "moto.log"
    command = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert command, "moto_server is missing: scripts/setup.sh --test installs moto[server]"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = S3Server(process, port, log)
    try:
        wait_for_port("127.0.0.1", port, 30, process)
        server.client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=object_lock)
        yield server
    finally:
        server.stop()
