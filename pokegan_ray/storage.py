"""Object-store locations: one way to name, read and write data on a local disk or S3.

A `Location` pairs a pyarrow filesystem with a path inside it, plus the URI a person
typed (for messages). Everything that touches storage (prepare, Ray Data reads,
metric caches, checkpoints) goes through here, so local folders and `s3://` behave
the same.

S3 settings come from the standard places: credentials from the AWS default chain
(environment, shared config, instance profile) and a non-AWS endpoint (moto, MinIO)
from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`. Credentials are never passed into
the filesystem object, so pickling it to Ray workers never carries a secret; each
process resolves the chain itself.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and never a secret."""


def redact(text: str) -> str:
    """Remove any secret credential value that an underlying library put in a message."""
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class Location:
    """A place in an object store: `filesystem` + `path` (no scheme), and the `uri` for people."""

    filesystem: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def uri_of(self, path: str) -> str:
        """A path on this location's filesystem (as Ray or a listing gives it) as a URI for people."""
        return "s3://" + path.lstrip("/") if self.is_s3 else path

    def join(self, *parts: str) -> "Location":
        path = posixpath.join(self.path, *parts)
        uri = self.uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)
        return Location(self.filesystem, path, uri)

    # -- reading ---------------------------------------------------------------
    def exists(self) -> bool:
        info = self._call("inspect", self.filesystem.get_file_info, self.path)
        return info.type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.filesystem.open_input_stream(self.path) as stream:
                return stream.read()

        return self._call("read", read)

    def list_files(self) -> list[pafs.FileInfo]:
        """Every file below this location (recursive), sorted by path."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=False)
        infos = self._call("list", self.filesystem.get_file_info, selector)
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    # -- writing ---------------------------------------------------------------
    def write_bytes_atomic(self, data: bytes) -> None:
        """Write one object so that a reader sees either the old content or the new, never a part.

        An S3 PUT only becomes visible once complete. A local file is written beside
        its target and renamed over it (rename is atomic on POSIX).
        """
        parent = posixpath.dirname(self.path)

        def write() -> None:
            if parent:
                self.filesystem.create_dir(parent, recursive=True)
            if self.is_s3:
                with self.filesystem.open_output_stream(self.path) as stream:
                    stream.write(data)
                return
            temporary = posixpath.join(parent, f".{posixpath.basename(self.path)}.{uuid.uuid4().hex}.tmp")
            with self.filesystem.open_output_stream(temporary) as stream:
                stream.write(data)
            self.filesystem.move(temporary, self.path)

        self._call("write", write)

    def delete_tree(self) -> None:
        """Delete this folder and everything below it; a missing folder is fine."""
        if self.exists():
            self._call("delete", self.filesystem.delete_dir, self.path)

    def delete_file(self) -> None:
        if self.exists():
            self._call("delete", self.filesystem.delete_file, self.path)

    def check_writable(self) -> None:
        """Fail now, with a clear message, if nothing can be written here."""
        probe = self.join(f".pokegan-write-probe-{uuid.uuid4().hex}")
        probe.write_bytes_atomic(b"probe")
        probe.delete_file()

    def _call(self, verb: str, function, *args):
        try:
            return function(*args)
        except (OSError, ValueError) as error:  # pyarrow raises OSError/ArrowInvalid (a ValueError)
            raise StorageError(f"cannot {verb} {self.uri}: {_explain(error)}") from None


def _explain(error: Exception) -> str:
    text = redact(str(error))
    lowered = text.lower()
    if ("nosuchbucket" in lowered or "bucket does not exist" in lowered or "no_such_bucket" in lowered
            or ("bucket" in lowered and "not found" in lowered)):
        return "the bucket does not exist (create it, or fix the bucket name in the URI)"
    refused = ("invalidaccesskeyid", "invalid_access_key_id", "signaturedoesnotmatch", "signature_does_not_match",
               "access_denied", "accessdenied", "forbidden", "expiredtoken", "invalidtoken")
    if any(marker in lowered for marker in refused):
        return ("the credentials were refused (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or the instance profile); details: " + text.splitlines()[0])
    if "couldn't connect" in lowered or "connection refused" in lowered or "curl" in lowered \
            or "network_connection" in lowered or "timed out" in lowered:
        endpoint = s3_endpoint() or "the AWS default endpoint"
        return (f"the S3 endpoint {endpoint} cannot be reached (is the server running? "
                "set AWS_ENDPOINT_URL_S3 for MinIO or moto); details: " + text.splitlines()[0])
    return text.splitlines()[0] if text else type(error).__name__


def s3_endpoint() -> str | None:
    """The non-AWS S3 endpoint from the standard variables, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem() -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem from the standard AWS settings, holding no secret itself."""
    options: dict = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "connect_timeout": 5,
        "request_timeout": 60,
        # A dead endpoint should fail in seconds, not after the SDK's long default backoff.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**options)


def location(uri: str) -> Location:
    """Resolve `s3://bucket/prefix`, `file:///abs/path` or a plain local path."""
    if not uri:
        raise StorageError("an empty URI was given; use a local path, file:///path or s3://bucket/prefix")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
        path = (parsed.netloc + "/" + parsed.path.strip("/")).rstrip("/")
        return Location(s3_filesystem(), path, f"s3://{path}")
    if parsed.scheme == "file":
        local_path = os.path.abspath(parsed.path)
    elif parsed.scheme == "" or len(parsed.scheme) == 1:  # plain path (or a Windows drive letter)
        local_path = os.path.abspath(os.path.expanduser(uri))
    else:
        raise StorageError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}; "
                           "use a local path, file:///path or s3://bucket/prefix")
    return Location(pafs.LocalFileSystem(), local_path, local_path)
