"""A lock in the object store, so two nightly retrains never train and promote at the same time.

The lock is one small JSON object (`lock.json`: owner, user, host, pid, start time, a random
token). Taking it is a single atomic create-if-absent (`Location.create_exclusive`: a PUT with
`If-None-Match: *` on S3, `O_CREAT | O_EXCL` locally), so of two racing processes exactly
one wins. Releasing deletes it only while it is still ours. A lock older than its TTL is
taken to belong to a crashed run and is broken with a warning; on S3 the break is a
conditional delete of exactly the stale object, so two processes breaking it at once cannot
both win.
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pokegan_ray.storage import Location

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 12 * 3600
POLL_SECONDS = 5.0
# Create / look / break rounds without waiting, for the rare case the lock vanishes between two looks.
_ATTEMPTS_PER_POLL = 5


class LockHeld(RuntimeError):
    """Someone else holds the lock; the message names them and since when."""


@dataclass(frozen=True)
class LockRecord:
    owner: str  # what holds it, e.g. "pokegan retrain"
    user: str
    host: str
    pid: int
    started_at: str  # ISO 8601, UTC
    token: str  # random: tells this holder's lock from any other

    @classmethod
    def new(cls, owner: str, now: datetime.datetime) -> "LockRecord":
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (e.g. in a container)
            user = str(os.getuid())
        return cls(owner=owner, user=user, host=socket.gethostname(), pid=os.getpid(),
                   started_at=now.isoformat(timespec="seconds"), token=uuid.uuid4().hex)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    def describe(self) -> str:
        return f"{self.owner} ({self.user}@{self.host}, pid {self.pid}) since {self.started_at}"


class ObjectStoreLock:
    """`lock = ObjectStoreLock(root.join("lock.json"), owner="pokegan retrain"); lock.acquire()`, then
    `lock.release()` in a `finally`."""

    def __init__(self, target: Location, owner: str, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)):
        if ttl_seconds < 0:
            raise ValueError(f"the lock's TTL must be >= 0 seconds, got {ttl_seconds}")
        self.target = target
        self.owner = owner
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.record: LockRecord | None = None  # ours, while we hold it

    def acquire(self, wait_seconds: float = 0.0, poll_seconds: float = POLL_SECONDS,
                sleep: Callable[[float], None] = time.sleep) -> LockRecord:
        """Take the lock, waiting up to `wait_seconds` for its holder to let go; raises LockHeld."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while True:
            holder = self._try_acquire()
            if holder is None:
                return self.record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" after waiting {wait_seconds:g} s" if wait_seconds > 0 else ""
                raise LockHeld(f"{self.target.uri} is held by {holder}{waited}. Another retrain is running; "
                               f"wait for it (pokegan retrain --wait SECONDS), or, if that process is gone, delete "
                               f"{self.target.uri} (a lock older than {self.ttl_seconds / 3600:g} h is broken "
                               "automatically)")
            log.info("waiting for the lock %s, held by %s", self.target.uri, holder)
            sleep(min(poll_seconds, remaining))

    def release(self) -> None:
        """Delete the lock if it is still ours; if someone broke it meanwhile, leave theirs alone."""
        if self.record is None:
            return
        record, self.record = self.record, None
        current = self.target.read_versioned()
        if current is None:
            log.warning("the lock %s was already gone when this run released it", self.target.uri)
            return
        data, version = current
        if _parse(data).get("token") != record.token:
            log.warning("the lock %s is no longer ours (it was broken as stale and is now held by %s); "
                        "leaving it in place", self.target.uri, self._describe(data))
            return
        self.target.delete_if_version(version)

    # -- one round: create, else look at the holder and break it if stale ----------------
    def _try_acquire(self) -> str | None:
        """None when the lock is now ours; otherwise a description of its holder."""
        for _ in range(_ATTEMPTS_PER_POLL):
            record = LockRecord.new(self.owner, self.clock())
            if self.target.create_exclusive(record.to_bytes()):
                self.record = record
                return None
            current = self.target.read_versioned()
            if current is None:
                continue  # released between our create and our look: try again at once
            data, version = current
            age_seconds = self._age_seconds(data)
            if age_seconds is None or age_seconds < self.ttl_seconds:
                return self._describe(data)
            log.warning("breaking the stale lock %s: held by %s, %s old, longer than the %s TTL; its run "
                        "presumably died", self.target.uri, self._describe(data), format_duration(age_seconds),
                        format_duration(self.ttl_seconds))
            self.target.delete_if_version(version)  # False: someone else broke or replaced it first
        return "a lock that keeps changing hands"

    def _age_seconds(self, data: bytes) -> float | None:
        started = _parse(data).get("started_at")
        try:
            started_at = datetime.datetime.fromisoformat(started)
        except (TypeError, ValueError):
            # Unreadable: being written this instant, or left half-written by a crash. Its age is
            # then the object's own, so a crashed writer's lock still expires.
            started_at = self._modified_at()
            if started_at is None:
                return None
        if started_at.tzinfo is None:
            started_at = started_at.replace(tzinfo=datetime.timezone.utc)
        return (self.clock() - started_at).total_seconds()

    def _modified_at(self) -> datetime.datetime | None:
        try:
            return self.target.filesystem.get_file_info(self.target.path).mtime
        except (OSError, ValueError):
            return None

    def _describe(self, data: bytes) -> str:
        fields = _parse(data)
        try:
            record = LockRecord(**{key: fields[key] for key in LockRecord.__dataclass_fields__})
        except (KeyError, TypeError):
            record = None
        age = self._age_seconds(data)
        if record is None:
            return "an unreadable lock" + (f", written {format_duration(age)} ago" if age is not None else "")
        return record.describe() + (f" ({format_duration(age)} ago)" if age is not None else "")


def _parse(data: bytes) -> dict:
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def format_duration(seconds: float) -> str:
    """42s, 4m12s, 13h00m."""
    seconds = round(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
