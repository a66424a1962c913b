"""What FID-based early stopping saves: the same search with and without the ASHA scheduler.

Both searches use the same space, the same Optuna seed and the same number of trials. Optuna's
first `startup_trials` proposals are random draws from that seed, so those trials are identical
in both searches; later TPE proposals follow the results and may differ (stopped trials report
the FID they reached when they were stopped). Compute is measured as the real images shown to
the discriminators of all trials together (a stopped or failed trial counts what it saw).

    python benchmarks/search_saving.py [--space search_spaces/quick.yaml] [--samples 6] [--steps N]
                                       [--data URI] [--storage DIR]

Last line: `search_saving: compute_ratio=<with/without> best_fid_with=<x> best_fid_without=<y>`
(target: compute_ratio <= 0.33 with best_fid_with within 5 % of best_fid_without).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

from pokegan_ray.cli import ensure_default_data, init_ray
from pokegan_ray.search.runner import run_search
from pokegan_ray.search.space import SearchSpace


def one_search(space: SearchSpace, scheduler: str, args, storage: str):
    settings = dataclasses.replace(space.settings, scheduler=scheduler, samples=args.samples)
    started = time.perf_counter()
    overrides = {"train": {"steps": args.steps}} if args.steps else {}
    outcome = run_search(dataclasses.replace(space, settings=settings), storage_uri=storage,
                         name=f"saving-{scheduler}", data_uri=args.data, overrides=overrides)
    seconds = time.perf_counter() - started
    images = sum(record.images_seen for record in outcome.records)
    best = outcome.best.best_fid if outcome.best else float("inf")
    statuses = ", ".join(f"{record.number}:{record.status}@{record.step}" for record in outcome.records)
    print(f"{scheduler:>5}: {len(outcome.records)} trials, {images:,} images seen, best FID {best:.2f}, "
          f"{seconds:.0f} s  [{statuses}]", flush=True)
    return images, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/quick.yaml")
    parser.add_argument("--samples", type=int, default=6, help="trials per search (default: 6)")
    parser.add_argument("--steps", type=int, default=0, help="generator steps per trial (default: the space's)")
    parser.add_argument("--data", default=None, help="prepared set (default: the bundled one, prepared if absent)")
    parser.add_argument("--storage", default=None, help="where both searches go (default: a temporary folder)")
    args = parser.parse_args()

    space = SearchSpace.load(args.space)
    init_ray()
    if not args.data:
        ensure_default_data({})
    storage = args.storage or tempfile.mkdtemp(prefix="search-saving-")
    print(f"space {args.space}, {args.samples} trials each, seed {space.settings.seed}, storage {storage}",
          flush=True)
    images_with, best_with = one_search(space, "asha", args, os.path.join(storage, "with"))
    images_without, best_without = one_search(space, "none", args, os.path.join(storage, "without"))
    print(f"search_saving: compute_ratio={images_with / images_without:.2f} best_fid_with={best_with:.2f} "
          f"best_fid_without={best_without:.2f}")


if __name__ == "__main__":
    main()
