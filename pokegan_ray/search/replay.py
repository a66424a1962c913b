"""Early stopping replayed on recorded learning curves, through the search's own ASHA scheduler.

A real search costs its trials' training; whether its early stopping is worth that depends on the
order trials arrive in, which a single search samples once. Replaying curves recorded without
early stopping (`benchmarks/rung_fidelity.py` saves them with each trial's final FID at a large N)
through the same scheduler class a search uses (`runner._asha`, Tune's ASHAScheduler) shows what
it would have stopped, and at what cost, for as many orders as wanted, at no training cost.

The clock is real images seen: a trial that has seen more images reports later, and with
`concurrent` slots a stopped or finished trial's slot goes to the next trial in the order.
"""

from __future__ import annotations

import heapq
import itertools
import math
import tempfile
import types
from dataclasses import dataclass
from typing import Any, Sequence

from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.storage import location


@dataclass(frozen=True)
class ReplayOutcome:
    images_with: int  # real images all trials saw with early stopping (a stopped trial counts what it saw)
    images_without: int  # the same, every trial trained to its end
    best_final_with: float  # the best final FID among the trials the scheduler let finish
    best_final_without: float  # the best final FID of all trials
    stopped: tuple[int, ...]  # the trials (their index in the curves) stopped early
    # The final FID of the trial each search would return (search.results.ranked: among the trials that ran to
    # their end, the lowest FID at their last rung), with and without early stopping.
    picked_final_with: float = math.nan
    picked_final_without: float = math.nan

    @property
    def compute_ratio(self) -> float:
        return self.images_with / self.images_without

    @property
    def fid_gap(self) -> float:
        """How much worse the best finished trial is than the best of all: 0.05 is 5 %."""
        return self.best_final_with / self.best_final_without - 1.0

    @property
    def picked_gap(self) -> float:
        """How much worse the trial the search returns is than the one a search without stopping returns."""
        return self.picked_final_with / self.picked_final_without - 1.0


def check_curves(curves: Sequence[dict[str, Any]], signal: str) -> None:
    """Each trial needs `rungs` (each with images_seen, step and the signal) and a `final_fid`."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown rung signal {signal!r}; choose one of: {', '.join(SIGNALS)}")
    if len(curves) < 2:
        raise ValueError(f"a replay needs at least two trials' curves, got {len(curves)}")
    for index, trial in enumerate(curves):
        rungs = trial.get("rungs") or []
        if not rungs or not math.isfinite(float(trial.get("final_fid", math.nan))):
            raise ValueError(f"trial {index} of the curves has no rungs or no finite final_fid")
        missing = [key for key in ("images_seen", "step", signal) if any(key not in rung for rung in rungs)]
        if missing:
            raise ValueError(f"trial {index}'s rungs lack {missing[0]!r} (recorded curves must carry each "
                             "rung's images_seen, step and the rung signal)")


def replay_asha(curves: Sequence[dict[str, Any]], *, signal: str, grace: int, reduction_factor: float,
                order: Sequence[int] | None = None, concurrent: int = 1) -> ReplayOutcome:
    """Feed the curves' rung results, in arrival order, to the search's ASHA on `signal` (rungs in images)."""
    from ray.tune.schedulers import TrialScheduler

    from pokegan_ray.search.runner import StopLog, _asha

    check_curves(curves, signal)
    order = list(range(len(curves))) if order is None else list(order)
    if sorted(order) != list(range(len(curves))):
        raise ValueError("order must list every trial of the curves once")
    ends = [int(trial["rungs"][-1]["images_seen"]) for trial in curves]
    seen = [0] * len(curves)
    stopped = []
    with tempfile.TemporaryDirectory() as folder:
        scheduler = _asha(StopLog(location(folder)), "images", max(ends), grace, reduction_factor, signal)
        events: list[tuple[int, int, int, int]] = []  # (clock, arrival, trial, rung)
        arrivals = itertools.count()  # ties on the clock: first scheduled, first reported

        def start(trial_index: int, clock: int) -> None:
            scheduler.on_trial_add(None, types.SimpleNamespace(trial_id=str(trial_index)))
            for rung_index, rung in enumerate(curves[trial_index]["rungs"]):
                heapq.heappush(events, (clock + int(rung["images_seen"]), next(arrivals), trial_index, rung_index))

        waiting = iter(order)
        for _ in range(min(concurrent, len(order))):
            start(next(waiting), 0)
        ended: set[int] = set()
        while events:
            clock, _, trial_index, rung_index = heapq.heappop(events)
            if trial_index in ended:
                continue
            rung = curves[trial_index]["rungs"][rung_index]
            result = {**rung, "evaluated": 1.0, signal: float(rung[signal])}
            decision = scheduler.on_trial_result(None, types.SimpleNamespace(trial_id=str(trial_index)), result)
            seen[trial_index] = int(rung["images_seen"])
            last = rung_index == len(curves[trial_index]["rungs"]) - 1
            if decision == TrialScheduler.STOP and not last:
                stopped.append(trial_index)
            if decision == TrialScheduler.STOP or last:
                ended.add(trial_index)
                following = next(waiting, None)
                if following is not None:
                    start(following, clock)
    finished = [index for index in range(len(curves)) if index not in stopped]

    def picked(indices: list[int]) -> float:
        return float(curves[min(indices, key=lambda index: float(curves[index]["rungs"][-1]["fid"]))]["final_fid"])

    return ReplayOutcome(images_with=sum(seen), images_without=sum(ends),
                         best_final_with=min(float(curves[index]["final_fid"]) for index in finished),
                         best_final_without=min(float(trial["final_fid"]) for trial in curves),
                         stopped=tuple(sorted(stopped)), picked_final_with=picked(finished),
                         picked_final_without=picked(list(range(len(curves)))))
