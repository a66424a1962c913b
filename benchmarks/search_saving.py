"""What FID-based early stopping saves: the same search with and without the ASHA scheduler.

Both searches use the same space, the same Optuna seed and the same number of trials. Optuna's
first `startup_trials` proposals are random draws from that seed, so those trials are identical
in both searches; later TPE proposals follow the results and may differ (stopped trials report
the FID they reached when they were stopped). Compute is measured as the real images shown to
the discriminators of all trials together (a stopped or failed trial counts what it saw).

    python benchmarks/search_saving.py [--space search_spaces/quick.yaml] [--samples 6] [--steps N]
                                       [--scheduler asha|pbt] [--data URI] [--storage DIR]
                                       [--seed N] [--final-n N] [--score-only]

Last line: `search_saving: compute_ratio=<with/without> best_fid_with=<x> best_fid_without=<y>
final_fid_with=<x'> final_fid_without=<y'>` (target: compute_ratio <= 0.33 with final_fid_with within 5 % of
final_fid_without). best FID is the FID at the last evaluation of the trial each search picks
(search.results.ranked), at the space's eval_images; final FID is that trial's last checkpoint scored from
`--final-n` generated images (default: as many as the originals) against every original, as `pokegan
evaluate` does. `--scheduler pbt` compares a PBT population of `--samples` trials (all at once: the space's
perturbation_interval, pbt_quantile and mutable dimensions) with the same number of trials without
stopping, at equal compute: `search_saving: pbt compute_ratio=<~1> best_fid_with=<pbt> ...`.
`--score-only --storage DIR` trains nothing and scores the two searches an earlier run left in DIR.

With `--replay FILE` (a `rung_fidelity.json`: curves recorded without early stopping, each trial's
final FID at a large N) it trains nothing: the curves go through the search's own ASHA scheduler
(`pokegan_ray.search.replay`) in `--seeds` random trial orders, `--concurrent` at a time, and it
prints the spread over the orders. Last line: `search_saving: replay compute_ratio=<median>
best_fid_gap=<median %> within_5pct=<share of orders> picked_gap=<median %> picked_within_5pct=<share>
orders=<seeds> trials=<n>`: best_fid_gap compares the best final FID among the trials ASHA let finish with the
best of all; picked_gap compares the trial each search would return (the lowest FID at the last rung, as
the leaderboard ranks) with and without stopping.

    python benchmarks/search_saving.py --replay STORAGE/rung_fidelity.json [--seeds 200]
                                       [--reduction-factor 3] [--grace IMAGES] [--signal fid] [--concurrent 1]

With `--check-replay FILE` it runs one real ASHA search, one trial at a time, over the same
configurations the file recorded (the same seeded random draws, lengths and rungs; `--grace`
defaults to the recorded rung spacing, as a search's does) and replays the curves in the order the
search ran them: both should stop the same trials and keep the same compute. Last line:
`search_saving: check real_compute_ratio=<x> replay_compute_ratio=<y> same_stops=<bool>
real_best_fid_gap=<%> replay_best_fid_gap=<%> max_rung_fid_difference=<|real - recorded|>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time

import numpy as np

from pokegan_ray.cli import ensure_default_data, init_ray
from pokegan_ray.metrics import weights_path_from_environment
from pokegan_ray.search.ledger import Ledger
from pokegan_ray.search.results import best_trial
from pokegan_ray.search.runner import run_search
from pokegan_ray.search.space import SearchSpace
from pokegan_ray.storage import location
from pokegan_ray.training.evaluation import evaluate_checkpoint


def one_search(space: SearchSpace, scheduler: str, args, storage: str):
    """Runs one search (or, with --score-only, reads the one already in `storage`): (images seen, the pick's
    last FID, the pick's final FID at --final-n)."""
    name = f"saving-{scheduler}"
    started = time.perf_counter()
    if args.score_only:
        records = Ledger(location(storage).join(name)).records()
        if not records:
            raise SystemExit(f"--score-only: no search {name!r} under {storage} (the --storage of an earlier run)")
    else:
        settings = dataclasses.replace(space.settings, scheduler=scheduler, samples=args.samples)
        if scheduler == "pbt":  # a synchronous population: every member runs at once
            settings = dataclasses.replace(settings, concurrent=args.samples)
        overrides = {"train": {"steps": args.steps}} if args.steps else {}
        records = run_search(dataclasses.replace(space, settings=settings), storage_uri=storage, name=name,
                             data_uri=args.data, overrides=overrides).records
    seconds = time.perf_counter() - started
    images = sum(record.images_seen for record in records)
    pick = best_trial(records)  # the search's pick, ranked where it ended
    best = pick.last_fid if pick else float("inf")
    statuses = ", ".join(f"{record.number}:{record.status}@{record.step}" for record in records)
    print(f"{scheduler:>5}: {len(records)} trials, {images:,} images seen, best FID {best:.2f}"
          f"{'' if args.score_only else f', {seconds:.0f} s'}  [{statuses}]", flush=True)
    scores = final_scores(pick, args.final_n) if pick and args.final_n >= 0 else {}
    final = scores.get("fid", math.nan)
    if scores:
        print(f"{scheduler:>5}: its pick, trial {pick.number} ({pick.params_text()}), at its end: FID {final:.2f} "
              f"(N={int(scores['fid_num_images'])} against {int(scores['fid_real_images'])} originals)", flush=True)
    return images, best, final


def final_scores(record, final_n: int) -> dict[str, float]:
    """The scores of a trial's last checkpoint (where it ended) from `final_n` images (0: as many as the
    originals) against every original, as `pokegan evaluate` scores it; {} without a checkpoint."""
    checkpoints = [entry["checkpoint_uri"] for entry in record.history if entry.get("checkpoint_uri")]
    if not checkpoints:
        return {}
    scores, _, _ = evaluate_checkpoint(checkpoints[-1], num_images=final_n or None,
                                       weights_path=weights_path_from_environment())
    return scores


def replay(args) -> None:
    from pokegan_ray.search.replay import replay_asha

    with open(args.replay, encoding="utf-8") as handle:
        recorded = json.load(handle)
    curves = recorded["trials"]
    # A search's grace is train.eval_every (the recorded rung spacing), not the first rung's images seen (a
    # little more): from 1,216 ASHA's next milestone would be 3,648, past the third rung at 3,616.
    grace = args.grace or int(recorded.get("rung") or curves[0]["rungs"][0]["images_seen"])
    rng = np.random.default_rng(0)
    outcomes = [replay_asha(curves, signal=args.signal, grace=grace, reduction_factor=args.reduction_factor,
                            order=rng.permutation(len(curves)).tolist(), concurrent=args.concurrent)
                for _ in range(args.seeds)]
    ratios = np.array([outcome.compute_ratio for outcome in outcomes])
    gaps = np.array([outcome.fid_gap for outcome in outcomes]) * 100
    print(f"{args.replay}: {len(curves)} trials of {recorded.get('space')}, ASHA on {args.signal}, grace "
          f"{grace:,} images, reduction factor {args.reduction_factor:g}, {args.concurrent} at a time, "
          f"{args.seeds} random orders")
    print(f"compute ratio  min {ratios.min():.2f}  median {np.median(ratios):.2f}  max {ratios.max():.2f}")
    print(f"best FID gap   min {gaps.min():.1f} %  median {np.median(gaps):.1f} %  max {gaps.max():.1f} %  "
          f"(best final FID of all: {outcomes[0].best_final_without:.2f})")
    picked = np.array([outcome.picked_gap for outcome in outcomes]) * 100
    print(f"picked trial   final FID {outcomes[0].picked_final_without:.2f} without stopping; with ASHA the "
          f"picked trial's is worse by median {np.median(picked):.1f} %, max {picked.max():.1f} %, within 5 % in "
          f"{np.mean(picked <= 5):.0%} of orders  (the pick: the lowest FID at the last rung)")
    print(f"search_saving: replay compute_ratio={np.median(ratios):.2f} best_fid_gap={np.median(gaps):.1f}% "
          f"within_5pct={np.mean(gaps <= 5):.2f} picked_gap={np.median(picked):.1f}% "
          f"picked_within_5pct={np.mean(picked <= 5):.2f} orders={args.seeds} trials={len(curves)}")


def check_replay(args) -> None:
    """A real ASHA search over the recorded configurations, against the replay of the order it ran them in."""
    from pokegan_ray.search.replay import replay_asha

    with open(args.check_replay, encoding="utf-8") as handle:
        recorded = json.load(handle)
    curves = recorded["trials"]
    rung = int(recorded["rung"])
    length = int(recorded.get("length") or curves[0]["rungs"][-1]["images_seen"])
    grace = args.grace or rung
    space = SearchSpace.load(recorded["space"])
    # What rung_fidelity.py ran (seeded random draws, no TPE), with ASHA on and one trial at a time.
    settings = dataclasses.replace(space.settings, scheduler="asha", samples=len(curves), concurrent=1,
                                   first_trials=(), startup_trials=len(curves), plateau_evaluations=0, grace=grace,
                                   reduction_factor=args.reduction_factor, signal=args.signal)
    train = {"images": length, "eval_every": rung, "checkpoint_every": rung, "sample_every": length,
             "keep_checkpoints": length // rung + 2}
    init_ray()
    if not args.data:
        ensure_default_data({})
    storage = args.storage or tempfile.mkdtemp(prefix="search-saving-check-")
    started = time.perf_counter()
    outcome = run_search(dataclasses.replace(space, settings=settings), storage_uri=storage, name="check",
                         data_uri=args.data, overrides={"train": train})
    seconds = time.perf_counter() - started
    by_params = {json.dumps(trial["params"], sort_keys=True): index for index, trial in enumerate(curves)}
    records = sorted(outcome.records, key=lambda record: record.number)
    order = [by_params.get(json.dumps(record.params, sort_keys=True)) for record in records]
    if None in order or sorted(order) != list(range(len(curves))):
        raise SystemExit("the search drew other configurations than the recorded ones (another space, seed or "
                         "Ray/Optuna version?): nothing to compare")
    difference = max(abs(float(entry["fid"]) - float(curves[index]["rungs"][rung_index]["fid"]))
                     for record, index in zip(records, order)
                     for rung_index, entry in enumerate(record.history))
    real_stopped = tuple(sorted(index for record, index in zip(records, order) if record.status == "stopped"))
    real_images = sum(record.images_seen for record in records)
    full_images = sum(int(trial["rungs"][-1]["images_seen"]) for trial in curves)
    best_all = min(float(trial["final_fid"]) for trial in curves)
    real_best = min(float(curves[index]["final_fid"]) for index in order if index not in real_stopped)
    replayed = replay_asha(curves, signal=args.signal, grace=grace, reduction_factor=args.reduction_factor,
                           order=order, concurrent=1)
    print(f"real search: {len(records)} trials in {seconds / 60:.1f} min, stopped {list(real_stopped)}, "
          f"{real_images:,} of {full_images:,} images; replay of the same order: stopped {list(replayed.stopped)}")
    print(f"search_saving: check real_compute_ratio={real_images / full_images:.2f} "
          f"replay_compute_ratio={replayed.compute_ratio:.2f} same_stops={real_stopped == replayed.stopped} "
          f"real_best_fid_gap={(real_best / best_all - 1) * 100:.1f}% "
          f"replay_best_fid_gap={replayed.fid_gap * 100:.1f}% max_rung_fid_difference={difference:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/quick.yaml")
    parser.add_argument("--samples", type=int, default=6, help="trials per search (default: 6)")
    parser.add_argument("--scheduler", choices=["asha", "pbt"], default="asha",
                        help="the search compared with one without stopping (pbt: every trial at once, so at "
                             "equal compute; default: asha)")
    parser.add_argument("--steps", type=int, default=0, help="generator steps per trial (default: the space's)")
    parser.add_argument("--seed", type=int, default=None, help="the search's seed (default: the space's)")
    parser.add_argument("--final-n", type=int, default=0, help="generated images of each pick's final FID against "
                        "every original (default 0: as many as the originals; -1: skip it)")
    parser.add_argument("--score-only", action="store_true", help="train nothing: score the two searches an "
                        "earlier run left in --storage")
    parser.add_argument("--data", default=None, help="prepared set (default: the bundled one, prepared if absent)")
    parser.add_argument("--storage", default=None, help="where both searches go (default: a temporary folder)")
    parser.add_argument("--replay", default=None, help="a rung_fidelity.json to replay instead of searching")
    parser.add_argument("--seeds", type=int, default=200, help="--replay: random trial orders (default: 200)")
    parser.add_argument("--reduction-factor", type=float, default=3.0, help="--replay: ASHA's (default: 3)")
    parser.add_argument("--grace", type=int, default=0, help="--replay: the first rung in images "
                                                             "(default: the recorded rung spacing, as a search's)")
    parser.add_argument("--signal", default="fid", help="--replay: the rung signal (default: fid)")
    parser.add_argument("--concurrent", type=int, default=1, help="--replay: trials at once (default: 1)")
    parser.add_argument("--check-replay", default=None, help="a rung_fidelity.json: run one real ASHA search over "
                        "its configurations and compare it with the replay of the same order")
    args = parser.parse_args()
    if args.check_replay:
        if not os.path.isfile(args.check_replay):
            parser.error(f"--check-replay {args.check_replay}: no such file (benchmarks/rung_fidelity.py writes "
                         "STORAGE/rung_fidelity.json)")
        check_replay(args)
        return
    if args.replay:
        if not os.path.isfile(args.replay):
            parser.error(f"--replay {args.replay}: no such file (benchmarks/rung_fidelity.py writes "
                         "STORAGE/rung_fidelity.json)")
        try:
            replay(args)
        except (ValueError, KeyError) as error:
            parser.error(f"--replay {args.replay}: {error}")
        return

    if args.score_only and not args.storage:
        parser.error("--score-only needs the --storage of the run that trained the searches")
    space = SearchSpace.load(args.space)
    if args.seed is not None:
        space = dataclasses.replace(space, settings=dataclasses.replace(space.settings, seed=args.seed))
    if not args.score_only:
        init_ray()
        if not args.data:
            ensure_default_data({})
    storage = args.storage or tempfile.mkdtemp(prefix="search-saving-")
    print(f"space {args.space}, {args.samples} trials each, seed {space.settings.seed}, storage {storage}",
          flush=True)
    images_with, best_with, final_with = one_search(space, args.scheduler, args, os.path.join(storage, "with"))
    images_without, best_without, final_without = one_search(space, "none", args, os.path.join(storage, "without"))
    what = "" if args.scheduler == "asha" else f"{args.scheduler} "
    print(f"search_saving: {what}compute_ratio={images_with / images_without:.2f} best_fid_with={best_with:.2f} "
          f"best_fid_without={best_without:.2f} final_fid_with={final_with:.2f} final_fid_without={final_without:.2f}")


if __name__ == "__main__":
    main()
