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

import errno
import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and never a secret."""


def redact(text: str, variables: tuple[str, ...] = _SECRET_VARIABLES) -> str:
    """Remove any secret credential value (of these environment variables) that an underlying library put in a
    message."""
    for name in variables:
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

    def is_file(self) -> bool:
        """A plain file (or object) is here, not a folder."""
        info = self._call("inspect", self.filesystem.get_file_info, self.path)
        return info.type == pafs.FileType.File

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

    # -- exclusive creation, for locks -------------------------------------------
    def create_exclusive(self, data: bytes) -> bool:
        """Create this object with `data` only if nothing is here yet: True when created, False when
        something already was. Atomic against any other writer doing the same.

        S3: a PUT with `If-None-Match: *` (through s3fs, since pyarrow cannot send the header).
        Local: the content goes into a temporary file that is then hard-linked to the name, which
        fails if the name exists: as exclusive as `O_CREAT | O_EXCL`, and nobody ever sees the
        object empty or half-written. Where hard links are not supported, `O_CREAT | O_EXCL`.
        """
        if self.is_s3:
            def create() -> bool:
                try:
                    _s3fs().pipe_file(self.path, data, mode="create")
                    return True
                except FileExistsError:
                    return False
                except OSError as error:
                    # Real S3 answers 409 to the loser of two simultaneous conditional PUTs.
                    if _s3_error_code(error) == "ConditionalRequestConflict":
                        return False
                    raise
            return self._call("create", create)

        def write_new(path: str) -> None:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(descriptor, data)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

        def create_local() -> bool:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            temporary = f"{self.path}.{uuid.uuid4().hex}.tmp"
            write_new(temporary)
            try:
                os.link(temporary, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
            finally:
                os.unlink(temporary)
            try:  # no hard links on this filesystem
                write_new(self.path)
                return True
            except FileExistsError:
                return False

        return self._call("create", create_local)

    def read_versioned(self) -> tuple[bytes, str] | None:
        """(content, version) of this object, or None when there is none; `version` changes whenever
        the object is replaced (the ETag on S3; inode, mtime and size locally)."""
        if self.is_s3:
            def read() -> tuple[bytes, str] | None:
                filesystem = _s3fs()
                try:
                    # The version first: if the object is replaced in between, the version is the older
                    # one, so a conditional delete with it fails instead of removing the newer object.
                    version = filesystem.info(self.path)["ETag"]
                    return filesystem.cat_file(self.path), version
                except FileNotFoundError:
                    return None
            return self._call("read", read)

        def read_local() -> tuple[bytes, str] | None:
            try:
                with open(self.path, "rb") as handle:
                    status = os.fstat(handle.fileno())
                    return handle.read(), f"{status.st_ino}:{status.st_mtime_ns}:{status.st_size}"
            except FileNotFoundError:
                return None
        return self._call("read", read_local)

    def delete_if_version(self, version: str) -> bool:
        """Delete this object only if it is still the `version` read before: True when deleted.

        S3 checks it on the server (`DeleteObject` with `If-Match: <ETag>`). Locally the check and
        the unlink are two steps, so a replacement in the microseconds between them can be lost.
        """
        if self.is_s3:
            bucket, _, key = self.path.partition("/")

            def delete() -> bool:
                try:
                    _s3fs().call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=version)
                    return True
                except FileNotFoundError:
                    return False
                except OSError as error:
                    if _s3_error_code(error) in ("PreconditionFailed", "412"):
                        return False
                    raise
            return self._call("delete", delete)

        def delete_local() -> bool:
            current = self.read_versioned()
            if current is None or current[1] != version:
                return False
            os.unlink(self.path)
            return True
        return self._call("delete", delete_local)

    def check_writable(self) -> None:
        """Fail now, with a clear message, if nothing can be written here. Creates nothing locally (a command
        that fails later leaves no empty folder behind); on S3 it writes and deletes a probe object."""
        if not self.is_s3:
            existing = self.path
            while not os.path.lexists(existing):
                existing = os.path.dirname(existing)
            if not os.path.isdir(existing):
                raise StorageError(f"cannot write {self.uri}: {existing} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise StorageError(f"cannot write {self.uri}: {existing} is not writable (permission denied)")
            return
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


def _s3fs():
    """An s3fs filesystem from the same standard settings, for the requests pyarrow cannot make
    (conditional PUT and DELETE). Never cached: a lock must see the object store as it is now."""
    import s3fs

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, endpoint_url=s3_endpoint(),
                             client_kwargs={"region_name": region},
                             config_kwargs={"connect_timeout": 5, "read_timeout": 60,
                                            "retries": {"max_attempts": 3}})


def _s3_error_code(error: BaseException) -> str:
    """The S3 error code behind an s3fs exception ("" when it has none)."""
    response = getattr(error.__cause__, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


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
