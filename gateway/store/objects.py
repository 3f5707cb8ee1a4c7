"""An S3-compatible bucket through boto3: the object side of the store.

The recordings domain (:class:`gateway.domain.recordings.storage.ObjectStore`)
decides what goes where; this module only speaks S3. boto3 rather than a
hand-written client: signing, retries and timeouts, ranged and multipart
transfers are its field, and it sets per-object retention (object lock) and
SHA-256 checksums, which the faster obstore does not expose.

Every failure is an :class:`ObjectStoreError` (an ``OSError``), saying which
bucket and object and what S3 answered, so the callers treat an unreachable
bucket like an unwritable disk.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import RecordingSettings

logger = logging.getLogger("pamgate.recordings")

#: Above this a file goes up in parts (boto3's managed transfer), below it in one PUT
#: that S3 checks against the file's SHA-256.
SINGLE_PUT_LIMIT = 1024 * 1024 * 1024
#: Objects one DeleteObjects request may name (S3's limit).
DELETE_BATCH = 1000

T = TypeVar("T")


class ObjectStoreError(OSError):
    """The bucket could not be reached, or refused a request."""


class S3Bucket:
    """One bucket of an S3-compatible store (AWS, MinIO, Ceph RGW, moto...)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        timeout: float = 5.0,
        object_lock: str = "none",
        object_lock_days: int = 365,
    ) -> None:
        """Settings left empty come from the standard AWS environment and files."""
        self.bucket = bucket
        region_name = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region_name or "us-east-1",
        )
        self._client: Any = session.client(
            "s3",
            # None: boto3 reads AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_S3) itself.
            endpoint_url=endpoint_url or None,
            config=Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                # Path-style: S3-compatible servers on a plain host name or address.
                s3={"addressing_style": "path"},
            ),
        )
        self._object_lock = object_lock
        self._object_lock_days = object_lock_days
        self._lock_checked: bool | None = None
        self._lock_check = threading.Lock()

    @classmethod
    def from_settings(cls, settings: RecordingSettings) -> S3Bucket:
        """The bucket ``[recordings] url`` names, with the ``s3_*`` settings."""
        return cls(
            settings.bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            timeout=settings.s3_timeout_seconds,
            object_lock=settings.s3_object_lock,
            object_lock_days=settings.s3_object_lock_days,
        )

    def _call(self, what: str, name: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(what, name, exc) from None

    def _error(self, what: str, name: str, exc: Exception) -> ObjectStoreError:
        """What S3 answered (or why it could not be reached), naming the object."""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            answer = f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
            return ObjectStoreError(f"s3://{self.bucket}/{name}: {what} refused: {answer}")
        return ObjectStoreError(f"s3://{self.bucket}/{name}: {what} failed: {exc}")

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store ``data`` as object ``name``."""
        self._call(
            "upload", name, lambda: self._client.put_object(Bucket=self.bucket, Key=name, Body=data)
        )

    def put_file(self, name: str, path: Path, *, sha256: str) -> str:
        """Store the file as object ``name``; returns its ETag.

        S3 checks the bytes it received against ``sha256`` (a single PUT up to
        SINGLE_PUT_LIMIT; larger files go in parts, each checked by its own
        checksum). The digest is also kept as the object's ``sha256`` metadata,
        and the object is retained under object lock when that is configured
        and the bucket has it enabled.
        """
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}, **self._retention()}
        if path.stat().st_size <= SINGLE_PUT_LIMIT:
            checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
            with open(path, "rb") as body:
                answer = self._call("upload", name, lambda: self._client.put_object(
                    Bucket=self.bucket, Key=name, Body=body, ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum, **extra,
                ))  # fmt: skip
            return str(answer["ETag"])
        extra["ChecksumAlgorithm"] = "SHA256"
        self._call("upload", name, lambda: self._client.upload_file(
            str(path), self.bucket, name, ExtraArgs=extra,
        ))  # fmt: skip
        etag = self.etag(name)
        if etag is None:
            raise ObjectStoreError(f"s3://{self.bucket}/{name}: missing after its upload")
        return etag

    def _retention(self) -> dict[str, Any]:
        """The object lock arguments of a sealed recording's PUT (none if not to be locked)."""
        if self._object_lock == "none" or not self._bucket_has_object_lock():
            return {}
        until = datetime.now(UTC) + timedelta(days=self._object_lock_days)
        return {"ObjectLockMode": self._object_lock.upper(), "ObjectLockRetainUntilDate": until}

    def _bucket_has_object_lock(self) -> bool:
        """Whether the bucket has object lock enabled (asked once; said in the log if not)."""
        with self._lock_check:
            if self._lock_checked is None:
                try:
                    answer = self._client.get_object_lock_configuration(Bucket=self.bucket)
                    enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                    self._lock_checked = enabled == "Enabled"
                    why = "it is not enabled on the bucket"
                except ClientError as exc:
                    # ObjectLockConfigurationNotFoundError, or a store without object lock.
                    self._lock_checked = False
                    why = exc.response.get("Error", {}).get("Code", "not supported")
                except BotoCoreError as exc:
                    raise ObjectStoreError(
                        f"s3://{self.bucket}: cannot read its object lock configuration: {exc}"
                    ) from None
                if not self._lock_checked:
                    logger.warning(
                        "s3_object_lock = %r, but bucket %s has no object lock (%s): "
                        "recordings are stored without retention",
                        self._object_lock, self.bucket, why,
                    )  # fmt: skip
            return self._lock_checked

    def etag(self, name: str) -> str | None:
        """The ETag of object ``name``, or None if there is none."""
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("lookup", name, exc) from None
        except BotoCoreError as exc:
            raise self._error("lookup", name, exc) from None
        return str(answer["ETag"])

    def download(self, name: str, path: Path) -> str:
        """Write object ``name`` to ``path`` (mode 0600); returns the ETag of what was written."""
        answer = self._call(
            "download", name, lambda: self._client.get_object(Bucket=self.bucket, Key=name)
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            self._call("download", name, lambda: _copy_body(answer["Body"], out))
        return str(answer["ETag"])

    def names(self, prefix: str) -> list[str]:
        """The names of the objects starting with ``prefix``, sorted."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        found = self._call(
            "listing", prefix,
            lambda: [item["Key"] for page in pages for item in page.get("Contents", [])],
        )  # fmt: skip
        return sorted(found)

    def delete(self, names: list[str]) -> None:
        """Delete these objects."""
        for start in range(0, len(names), DELETE_BATCH):
            batch = [{"Key": name} for name in names[start : start + DELETE_BATCH]]
            self._call("delete", names[start], lambda batch=batch: self._client.delete_objects(  # type: ignore[misc]
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True},
            ))  # fmt: skip


def _copy_body(body: Any, out: Any) -> None:
    for chunk in body.iter_chunks(1 << 20):
        out.write(chunk)
