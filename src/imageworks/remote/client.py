"""The S3 client (boto3) for one remote, and the one place botocore's errors become ours.

boto3/s3transfer because they are the maintained S3 client of the Python world: the full AWS
credential chain, SigV4, retries, multipart uploads with bounded memory, and every S3-compatible store
(MinIO, Ceph, R2, SeaweedFS, rclone) is tested against them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from imageworks.errors import EXIT_USAGE, ImageworksError
from imageworks.remote.config import Remote

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # type: ignore[import-not-found]  # pragma: no cover
else:
    S3Client = Any

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "403",
    "401",
}
_CRED_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the remote a profile from "
    "~/.aws/credentials (remote add --profile)"
)


class RemoteError(ImageworksError):
    """The object store answered something that stops us."""


class RemoteAuthError(RemoteError, PermissionError):
    exit_code = EXIT_USAGE


class BucketNotFound(RemoteError, LookupError):
    exit_code = EXIT_USAGE


class RemoteUnavailable(RemoteError, ConnectionError):
    pass


class ObjectMissing(RemoteError, LookupError):
    exit_code = EXIT_USAGE


def make_client(remote: Remote) -> S3Client:
    """A client for `remote`. Path-style addressing and checksums `when_required` whenever an endpoint is
    given: S3-compatible stores (MinIO, R2, Ceph, rclone) reject virtual-host buckets on a bare host and
    some reject the CRC checksums newer botocore sends by default.

    Made from a botocore session (what boto3.Session wraps): importing boto3 also imports s3transfer's
    transfer manager, ~0.15 s that a push with nothing to upload does not need."""
    import botocore.session
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import ProfileNotFound

    custom = remote.endpoint_url is not None
    try:
        session = botocore.session.Session(profile=remote.profile)
        region = remote.region or session.get_config_variable("region") or "us-east-1"
        config = BotoConfig(
            region_name=region,
            s3={"addressing_style": "path" if custom else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max(10, remote.concurrency * 2),
        )
        return session.create_client("s3", endpoint_url=remote.endpoint_url, config=config)
    except ProfileNotFound:
        raise RemoteAuthError(
            f"remote {remote.name!r}: AWS profile {remote.profile!r} not found",
            hint="add it to ~/.aws/credentials or ~/.aws/config, or change the remote's --profile",
        ) from None


def translate(exc: Exception, remote: Remote, what: str) -> RemoteError:
    """One clear line for what botocore raised while doing `what`."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    where = remote.endpoint_url or "AWS S3"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return RemoteAuthError(f"remote {remote.name!r}: no AWS credentials found", hint=_CRED_HINT)
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return RemoteUnavailable(
            f"remote {remote.name!r}: cannot reach {where} ({type(exc).__name__})",
            hint="check that the server runs and the remote's --endpoint-url (remote list shows it)",
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _AUTH_CODES or status in {401, 403}:
            return RemoteAuthError(
                f"remote {remote.name!r}: {where} rejected the credentials ({code or status}) while {what}",
                hint=_CRED_HINT,
            )
        if code == "NoSuchBucket":
            return bucket_missing(remote)
        if code in {"NoSuchKey", "404"} or status == 404:
            return ObjectMissing(f"remote {remote.name!r}: not found while {what}")
        message = error.get("Message") or str(exc)
        return RemoteError(f"remote {remote.name!r}: {code or status} while {what}: {message}")
    if isinstance(exc, OSError):
        return RemoteUnavailable(f"remote {remote.name!r}: {what}: {exc}")
    return RemoteError(f"remote {remote.name!r}: {what}: {type(exc).__name__}: {exc}")


def bucket_missing(remote: Remote) -> BucketNotFound:
    return BucketNotFound(
        f"remote {remote.name!r}: bucket {remote.bucket!r} does not exist at "
        f"{remote.endpoint_url or 'AWS S3'}",
        hint="create the bucket, or fix the remote's URL (remote remove NAME, then remote add)",
    )


@contextlib.contextmanager
def s3_errors(remote: Remote, what: str) -> Iterator[None]:
    """Translate botocore/boto3 errors raised inside the block."""
    try:
        yield
    except Exception as exc:
        # Imported only on failure: s3transfer is not otherwise needed by a push with nothing to upload.
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import S3UploadFailedError

        if not isinstance(exc, (ClientError, BotoCoreError, S3UploadFailedError, ConnectionError)):
            raise
        cause = exc.__cause__ if isinstance(exc, S3UploadFailedError) and exc.__cause__ else exc
        raise translate(cause if isinstance(cause, Exception) else exc, remote, what) from None


def check_bucket(client: S3Client, remote: Remote) -> None:
    """One HEAD on the bucket before any work: wrong credentials, a missing bucket or an unreachable
    endpoint each give one clear line here rather than a 404 per object later."""
    from botocore.exceptions import ClientError

    try:
        with s3_errors(remote, "checking the bucket"):
            try:
                client.head_bucket(Bucket=remote.bucket)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    raise bucket_missing(remote) from None
                raise
    except ObjectMissing:
        raise bucket_missing(remote) from None


def head(client: S3Client, remote: Remote, key: str) -> dict[str, Any] | None:
    """The object's HEAD answer, or None when it does not exist."""
    from botocore.exceptions import ClientError

    with s3_errors(remote, f"checking {key}"):
        try:
            return client.head_object(Bucket=remote.bucket, Key=key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                return None
            raise


def metadata_sha256(answer: dict[str, Any]) -> str | None:
    """The `sha256` user metadata of a HEAD/GET answer (stores differ in how they case the key)."""
    for key, value in (answer.get("Metadata") or {}).items():
        if key.lower() == "sha256":
            return str(value).lower()
    return None
