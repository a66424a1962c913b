"""Which rung signal predicts a trial's final FID: the measurement behind `search.signal`'s default.

A search stops trials at a rung on a score measured early and cheaply (FID from a few dozen
images). That is only worth its compute if the ranking at the rung agrees with the ranking the
trials would reach. This benchmark trains `--configs` configurations of a space (a seeded random
sample: Optuna's startup trials, without TPE and without early stopping) to the end, keeping a
checkpoint at every rung, and then scores every rung's EMA generator with each candidate signal:

    fid, kid, fid_infinity            at the rung's N (the space's train.eval_images, 64 in quick.yaml)
    fid_n<L>, kid_n<L>, fid_infinity_n<L>  at a larger N (--large-n, default 256)

and each trial's last checkpoint with the truth: FID from `--final-n` (default 1008) generated
images against all the set's real originals. Every trial is scored on the same latents (common
random numbers): the evaluator's seeded latents, the same for every configuration.

It prints the Spearman correlation of each signal at each rung with the final FID (1 means the
rung ranks the trials exactly as they end) and saves every number, learning curves included, to
`<storage>/rung_fidelity.json` (a replay of early stopping can read it). Last line:
`rung_fidelity: signal=<name> spearman_first_rung=<rho>`, the best signal at the first rung.

    python benchmarks/rung_fidelity.py [--space search_spaces/quick.yaml] [--configs 12] [--images N]
                                       [--rung N] [--large-n 256] [--final-n 1008] [--data URI] [--storage DIR]
                                       [--score-only]   (score what an earlier run in --storage trained)

On this 2-core CPU, 12 quick.yaml configurations at their 9,600 images take ~25 minutes to train and
~22 to score (Inception ~62 ms an image).
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
from scipy.stats import spearmanr

from pokegan_ray.cli import ensure_default_data, init_ray
from pokegan_ray.data.prepare import class_frequencies, read_manifest
from pokegan_ray.defaults import DEFAULT_DATA_URI
from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.search.ledger import Ledger
from pokegan_ray.search.runner import run_search
from pokegan_ray.search.space import SearchSpace
from pokegan_ray.storage import location
from pokegan_ray.training.checkpoint import load_generator, read_checkpoint
from pokegan_ray.training.config import ExperimentConfig
from pokegan_ray.training.evaluation import Evaluator


def train_trials(space: SearchSpace, args, storage: str):
    """The configurations, trained to the end with a checkpoint (and an evaluation) at every rung."""
    settings = dataclasses.replace(space.settings, scheduler="none", samples=args.configs, first_trials=(),
                                   startup_trials=args.configs, plateau_evaluations=0)
    base_train = space.base.get("train", {})
    length_key = "images" if base_train.get("images") is not None else "steps"
    length = args.images or base_train[length_key]
    rung = args.rung or base_train["eval_every"]
    train = {length_key: length, "eval_every": rung, "checkpoint_every": rung, "sample_every": length,
             "keep_checkpoints": length // rung + 2}
    outcome = run_search(dataclasses.replace(space, settings=settings), storage_uri=storage, name="fidelity",
                         data_uri=args.data, overrides={"train": train})
    return outcome.records, length_key, rung


def score_trials(records, evaluator_for, args) -> list[dict]:
    """Each trial's rungs scored by every candidate signal, and its final FID at --final-n."""
    scored = []
    for record in records:
        rungs = [entry for entry in record.history if entry.get("checkpoint_uri")]
        if record.status != "completed" or not rungs:
            print(f"trial {record.number}: {record.status}, left out ({record.reason})", flush=True)
            continue
        started = time.perf_counter()
        signals_by_rung = []
        for index, entry in enumerate(rungs):
            generator, experiment = load_generator(read_checkpoint(entry["checkpoint_uri"]))
            evaluator = evaluator_for(experiment)
            last = index == len(rungs) - 1
            # The last rung's large-N signals come from the first images of the final evaluation.
            features = np.concatenate(list(evaluator.features(
                generator, num_images=args.final_n if last else args.large_n).values()))
            small = evaluator.scores(features[:experiment.train.eval_images])
            signals = {name: small[name] for name in SIGNALS}
            large = evaluator.scores(features[:args.large_n])
            signals.update({f"{name}_n{args.large_n}": large[name] for name in SIGNALS})
            signals_by_rung.append({"step": entry["step"], "images_seen": entry["images_seen"], **signals})
            if last:
                final = evaluator.scores(features)
        scored.append({"trial": record.number, "params": record.params, "rungs": signals_by_rung,
                       "final_fid": final["fid"], "final_kid": final["kid"], "final_n": int(final["fid_num_images"])})
        print(f"trial {record.number}: final FID {final['fid']:.2f} (N={int(final['fid_num_images'])}); first rung "
              + ", ".join(f"{name} {value:.4g}" for name, value in signals_by_rung[0].items()
                          if name not in ("step", "images_seen"))
              + f"  [{time.perf_counter() - started:.0f} s]", flush=True)
    return scored


def spearman_table(scored: list[dict], rung_count: int) -> dict[str, list[float]]:
    """{signal: [rho at rung 1, rung 2, ...]} against the final FID, over the trials."""
    final = [trial["final_fid"] for trial in scored]
    names = [name for name in scored[0]["rungs"][0] if name not in ("step", "images_seen")]
    table = {}
    for name in names:
        table[name] = []
        for rung in range(rung_count):
            values = [trial["rungs"][rung][name] for trial in scored]
            rho = spearmanr(values, final).statistic if all(map(math.isfinite, values)) else math.nan
            table[name].append(float(rho))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/quick.yaml")
    parser.add_argument("--configs", type=int, default=12, help="configurations to train (default: 12)")
    parser.add_argument("--images", type=int, default=0, help="each trial's length in the base's unit "
                                                              "(default: the space's)")
    parser.add_argument("--rung", type=int, default=0, help="rung spacing (default: the base's train.eval_every)")
    parser.add_argument("--large-n", type=int, default=256, help="generated images of the larger-N signals")
    parser.add_argument("--final-n", type=int, default=1008, help="generated images of the final FID")
    parser.add_argument("--data", default=None, help="prepared set (default: the bundled one, prepared if absent)")
    parser.add_argument("--storage", default=None, help="where the trials go (default: a temporary folder)")
    parser.add_argument("--score-only", action="store_true",
                        help="score the trials an earlier run left in --storage instead of training new ones")
    args = parser.parse_args()
    if args.final_n < args.large_n:
        parser.error(f"--final-n ({args.final_n}) must be at least --large-n ({args.large_n})")

    space = SearchSpace.load(args.space)
    init_ray()
    if not args.data:
        ensure_default_data({})
    data = args.data or DEFAULT_DATA_URI
    storage = args.storage or tempfile.mkdtemp(prefix="rung-fidelity-")
    print(f"space {args.space}: {args.configs} configurations, seed {space.settings.seed}, storage {storage}",
          flush=True)
    started = time.perf_counter()
    if args.score_only:
        if not args.storage:
            parser.error("--score-only needs the --storage of the run that trained the trials")
        records = Ledger(location(storage).join("fidelity")).records()
        unit, rung = "images", args.rung or space.base["train"]["eval_every"]
    else:
        records, unit, rung = train_trials(space, args, storage)
    trained = time.perf_counter() - started

    manifest = read_manifest(location(data))
    evaluators: dict[int, Evaluator] = {}

    def evaluator_for(experiment: ExperimentConfig) -> Evaluator:
        # One evaluator (Inception loaded once) per resolution; the seed and N come from each trial's config.
        shared = evaluators.setdefault(experiment.data.resolution, Evaluator(
            experiment, manifest["classes"], manifest["content_hash"], class_frequencies(manifest), None, "cpu"))
        shared.experiment = experiment
        return shared

    scored = score_trials(records, evaluator_for, args)
    rung_count = min(len(trial["rungs"]) for trial in scored)
    table = spearman_table(scored, rung_count)
    rung_marks = [scored[0]["rungs"][index]["images_seen"] for index in range(rung_count)]
    print(f"\ntrained {len(records)} trials in {trained / 60:.1f} min, scored {len(scored)} in "
          f"{(time.perf_counter() - started - trained) / 60:.1f} min; Spearman rho with the final FID "
          f"(N={scored[0]['final_n']}) by rung (images seen):")
    print(f"{'signal':<22}" + "".join(f"{mark:>10,}" for mark in rung_marks))
    for name, rhos in table.items():
        print(f"{name:<22}" + "".join(f"{rho:>10.3f}" for rho in rhos))
    with open(os.path.join(storage, "rung_fidelity.json"), "w", encoding="utf-8") as handle:
        length = args.images or space.base["train"][unit]
        json.dump({"space": args.space, "unit": unit, "rung": rung, "length": length, "trials": scored,
                   "spearman": table}, handle, indent=1)
    best = max(table, key=lambda name: table[name][0] if math.isfinite(table[name][0]) else -math.inf)
    print(f"rung_fidelity: signal={best} spearman_first_rung={table[best][0]:.3f}")


if __name__ == "__main__":
    main()
