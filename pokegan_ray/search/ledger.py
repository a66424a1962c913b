"""What a search knows about its trials, kept in the object store as it happens.

The search driver writes one small JSON file per trial (`SEARCH/trials/<id>.json`): the sampled
parameters, every FID the trial reported, and how it ended. Tune keeps its own state for
`--resume`; this ledger is what people and the leaderboard read, and it survives an interrupted
driver because each event is written when it happens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from pokegan_ray.storage import Location, StorageError

RUNNING, COMPLETED, STOPPED, FAILED = "running", "completed", "stopped", "failed"


@dataclass
class TrialRecord:
    trial_id: str
    number: int  # 1-based, in the order the trials started
    params: dict[str, Any]  # the sampled dimensions only (switched-off ones are absent)
    run_uri: str  # the trial's training run folder
    status: str = RUNNING
    reason: str = ""  # why it stopped or failed, for people
    # One entry per evaluation: step, images_seen, fid, kid, fid_infinity, checkpoint_uri (None without one),
    # handoffs (PBT: how many copies of other trials' checkpoints the trial had taken when it reported it).
    history: list[dict[str, Any]] = field(default_factory=list)
    # Why a scheduler or stopper ended it early: by (asha, plateau), signal, value, step, images_seen.
    stop: dict[str, Any] | None = None
    # PBT: each time the trial continued from another's checkpoint: from_trial, step, images_seen, the signal's
    # value there, each dimension's value before, in the copied trial and now (the mutable ones and any the
    # copy changed), and checkpoint_uri (the copy it continues from).
    exploitations: list[dict[str, Any]] = field(default_factory=list)
    # Each time the trial's process died (a lost node) and Tune restarted it: after_step, error.
    restarts: list[dict[str, Any]] = field(default_factory=list)
    queued_at: float = 0.0  # Unix time the search created the trial (a free slot), before Tune placed it
    started_at: float = 0.0  # Unix time Tune had started the trial's process

    @property
    def finished(self) -> bool:
        return self.status in (COMPLETED, STOPPED, FAILED)

    @property
    def scored(self) -> list[dict[str, Any]]:
        """The evaluations with a finite FID, in the order they were reported."""
        return [entry for entry in self.history if math.isfinite(entry.get("fid", math.inf))]

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the lowest FID, if any."""
        scored = self.scored
        return min(scored, key=lambda entry: entry["fid"]) if scored else None

    @property
    def best_fid(self) -> float:
        best = self.best
        return best["fid"] if best else math.inf

    @property
    def last(self) -> dict[str, Any] | None:
        """The latest evaluation with a finite FID: where the trial ended (or has got to so far). This, not its
        best, is what the search ranks trials by: the minimum of many noisy evaluations rewards luck."""
        scored = self.scored
        return scored[-1] if scored else None

    @property
    def last_fid(self) -> float:
        last = self.last
        return last["fid"] if last else math.inf

    @property
    def images_seen(self) -> int:
        return max((int(entry["images_seen"]) for entry in self.history), default=0)

    @property
    def step(self) -> int:
        return max((int(entry["step"]) for entry in self.history), default=0)

    def since_last_copy(self) -> list[dict[str, Any]]:
        """The evaluations reported after the trial last continued from another's checkpoint (PBT); all of
        them if it never did."""
        return [entry for entry in self.history if int(entry.get("handoffs", 0)) == len(self.exploitations)]

    def best_checkpoint_uri(self) -> str | None:
        """The checkpoint saved with the best FID, else the best-scoring evaluation that has one."""
        with_checkpoint = [entry for entry in self.history
                           if entry.get("checkpoint_uri") and math.isfinite(entry.get("fid", math.inf))]
        if not with_checkpoint:
            return None
        return min(with_checkpoint, key=lambda entry: entry["fid"])["checkpoint_uri"]

    def params_text(self, separator: str = ", ") -> str:
        """The sampled params for people: `loss.name=dcgan, loss.generator_learning_rate=0.0002`."""
        return separator.join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                              for name, value in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Ledger:
    """The trial records of one search, under `SEARCH/trials/`."""

    def __init__(self, folder: Location):
        self.folder = folder.join("trials")

    def write(self, record: TrialRecord) -> None:
        self.folder.join(f"{record.trial_id}.json").write_bytes_atomic(
            json.dumps(record.to_dict(), indent=1).encode())

    def read(self, trial_id: str) -> TrialRecord | None:
        try:
            return TrialRecord(**json.loads(self.folder.join(f"{trial_id}.json").read_bytes()))
        except StorageError:
            return None

    def records(self) -> list[TrialRecord]:
        try:
            files = [info for info in self.folder.list_files() if info.path.endswith(".json")]
        except StorageError:
            return []
        records = [TrialRecord(**json.loads(self.folder.filesystem.open_input_stream(info.path).read()))
                   for info in files]
        return sorted(records, key=lambda record: record.number)
