"""FID of the seeds' training recipes against pokegan's, at the same number of real images seen.

The project grew from three public Pokémon GANs. Each row below trains one recipe with
`pokegan train` machinery (1 Ray worker, 2 torch threads, the same data, seed and FID
protocol) until D has seen `--images` real images, then scores the generator it samples
from (FID and KID on `--eval-images` generated images against the real originals):

1. mrm-dcgan: the MRM seed's DCGAN, as the DCGAN paper's recipe (the seed's code was not found);
2. ankitesh-wgan: ankitesh97/GANS `PokemonGenerator/pokeGan.py`, WGAN with weight clipping;
3. pokegans-wgan-gp: lanpartis/pokeGANs, WGAN-GP;
4. pokegan-default: pokegan's default recipe (DCGAN loss, DiffAugment, EMA of G);
5. search-best: the recipe of a `pokegan tune --space search_spaces/quick.yaml` search's
   best_config.yaml (`--search-best`; the row is skipped without it).

What is compared is the training recipe (loss, optimiser, learning rates, batch size,
critic schedule, clipping or penalty, DiffAugment, EMA), at equal compute on this CPU: the
networks are the same for every row (the quick.yaml widths: 32 base channels in G and D,
latent size 64, 64 px, DCGAN with transposed convolutions; search-best keeps the upsampler its
search chose), even where a seed used other widths, 128 px or a different latent size. Seed
recipes get neither DiffAugment nor an EMA (they had none).

Images seen counts real images shown to D (D batches x batch size), so a recipe with 5
critic steps per generator step gets a fifth of the generator steps of a DCGAN. Each row
trains the fewest generator steps whose D batches reach `--images`.

    python benchmarks/vs_seeds.py [--images 40000] [--eval-images 256] [--seed 0]
                                  [--search-best SEARCH/best_config.yaml] [--data URI] [--storage URI]

With the defaults, five rows take an estimated 20-26 minutes on this 2-core CPU: training at
the throughput quick.yaml trials reached here (~270 real images/s for DCGAN, ~115 for WGAN-GP
with one critic step), plus ~60-90 s a row of start-up and the final FID. FIDs are only
comparable at the same N (`--eval-images`).

Last line: `vs_seeds: best_seed_fid=<x> ours_fid=<y> ratio=<y/x>`, ours being the better of
pokegan-default and search-best; a failed or non-finite run counts as FID inf.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import yaml

# Every row trains the same networks (search_spaces/quick.yaml's base), so only the recipe differs.
SHARED_MODEL = {"architecture": "dcgan", "generator_channels": 32, "discriminator_channels": 32, "latent_size": 64,
                "upsampler": "transposed", "conditional": False}

# The seeds had neither DiffAugment nor an average of G: turn both off. ema_decay 0 makes the
# evaluated "EMA" generator an exact copy of G after every step (GeneratorEma lerps by 1 - decay).
NO_POKEGAN_EXTRAS = {"augment_policy": "", "ema_decay": 0.0}

# name -> (where the recipe comes from, raw config sections). Only keys pokegan has; what a seed
# did that pokegan cannot express is said next to it.
SEED_RECIPES: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    # No "MRM" Pokémon DCGAN could be identified among the public repositories searched (no repository
    # or owner named MRM holds one; MarieRoald/PokeGAN, the closest name, holds only an MNIST MLP GAN),
    # so this row is the DCGAN paper's recipe (Radford et al. 2016): Adam 2e-4, betas (0.5, 0.999),
    # batch 128, z = 100 (here 64, like every row), BatchNorm in G and D.
    "mrm-dcgan": ("DCGAN paper's recipe (the MRM seed was not found)", {
        "model": {},
        "loss": {"name": "dcgan", "generator_learning_rate": 2e-4, "discriminator_learning_rate": 2e-4,
                 "adam_betas": [0.5, 0.999], **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 128},
    }),
    # ankitesh97/GANS PokemonGenerator/pokeGan.py (the 128 px version with the README's results):
    # RMSProp 2e-4 for both networks (not the WGAN paper's 5e-5), clip 0.01, 5 critic steps,
    # batch 64, z = 100 uniform in [-1, 1], BatchNorm in the critic. Its warm-up took 25 critic steps
    # (not the paper's 100) for the first 25 generator steps and every 500th; pokegan's schedule
    # only knows the paper's 100, which would spend 4x the seed's warm-up images, so the schedule is
    # off and every generator step gets 5 critic steps: this favours the seed (more generator steps
    # for the same images). The seed clipped before each critic step, pokegan after.
    "ankitesh-wgan": ("ankitesh97/GANS PokemonGenerator/pokeGan.py", {
        "model": {"discriminator_norm": "batch"},
        "loss": {"name": "wgan", "generator_learning_rate": 2e-4, "discriminator_learning_rate": 2e-4,
                 "clip_value": 0.01, "n_critic": 5, "paper_critic_schedule": False, **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 64},
    }),
    # lanpartis/pokeGANs run.py (its stored .ipynb_checkpoints copy) and models.py: Adam 1e-4 for both,
    # betas (0.01, 0.9), d_iter = g_iter = 1, batch 64, z = 128 uniform in [0, 1], 128 px. Its
    # loss_with_penalty is not in the stored files: lambda = 10, the WGAN-GP paper's (and that of a
    # derived script with the same optimiser settings). Its critic used BatchNorm, which breaks the
    # per-sample penalty and which pokegan refuses with WGAN-GP; layer norm (pokegan's and the
    # paper's choice) stands in.
    "pokegans-wgan-gp": ("lanpartis/pokeGANs run.py + models.py", {
        "model": {"discriminator_norm": "layer"},
        "loss": {"name": "wgan-gp", "generator_learning_rate": 1e-4, "discriminator_learning_rate": 1e-4,
                 "adam_betas": [0.01, 0.9], "n_critic": 1, "paper_critic_schedule": False, "gp_weight": 10.0,
                 **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 64},
    }),
}
OURS = ("pokegan-default", "search-best")


@dataclass
class Row:
    name: str
    source: str
    raw: dict[str, dict[str, Any]]
    loss: str = ""
    generator_steps: int = 0
    images_seen: int = 0
    status: str = "not run"
    message: str = ""
    fid: float = math.inf
    kid: float = math.nan
    seconds: float = 0.0
    train_seconds: float = 0.0


def generator_steps_for(images: int, batch_size: int, loss_config) -> tuple[int, int]:
    """(generator steps, real images D sees): the fewest steps whose critic batches reach `images`,
    counting the loss's own critic steps before each generator step (the WGAN paper's schedule included)."""
    from pokegan_ray.losses.gan_losses import critic_steps

    target_batches = max(1, math.ceil(images / batch_size))
    steps = batches = 0
    while batches < target_batches:
        batches += critic_steps(steps, loss_config)
        steps += 1
    return steps, batches * batch_size


def common_sections(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "data": {"uri": args.data, "resolution": 64, "rows": "all"},
        "model": dict(SHARED_MODEL),
        # FID only at the end; no intermediate grids or checkpoints to pay for.
        "train": {"seed": args.seed, "eval_every": 0, "eval_images": args.eval_images, "report_every": 50,
                  "keep_checkpoints": 1, "mixed_precision": False},
        "scale": {"workers": 1, "use_gpu": False, "cpus_per_worker": 0.5, "threads_per_worker": 2},
    }


def search_best_sections(path: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The recipe of a search's best_config.yaml (model, loss, batch size), and notes on what was replaced."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    model = {key: value for key, value in (config.get("model") or {}).items() if key != "resolution_px"}
    notes = [f"model.{key}={model[key]!r} -> {value!r}" for key, value in SHARED_MODEL.items()
             if key in model and key not in ("upsampler",) and model[key] != value]
    # The upsampler is one of quick.yaml's searched dimensions: part of the recipe, so it is kept.
    shared = {key: value for key, value in SHARED_MODEL.items() if key != "upsampler"}
    return {"model": {**model, **shared}, "loss": dict(config.get("loss") or {}),
            "train": {"batch_size": (config.get("train") or {}).get("batch_size", 64)}}, notes


def build_rows(args: argparse.Namespace) -> list[Row]:
    """Every row's validated raw config, with its generator steps for the image budget (no Ray yet)."""
    from pokegan_ray.training.config import ExperimentConfig, merge_sections

    common = common_sections(args)
    recipes = [(name, source, sections) for name, (source, sections) in SEED_RECIPES.items()]
    # pokegan's defaults (DCGAN loss, DiffAugment, EMA, batch 64) at the shared widths.
    recipes.append(("pokegan-default", "ExperimentConfig defaults", {}))
    if args.search_best:
        sections, notes = search_best_sections(args.search_best)
        for note in notes:
            print(f"search-best: set to the shared networks: {note}")
        recipes.append(("search-best", args.search_best, sections))
    rows = []
    for name, source, sections in recipes:
        raw = merge_sections(common, sections)
        experiment = ExperimentConfig.from_dict(raw)
        steps, images_seen = generator_steps_for(args.images, experiment.train.batch_size, experiment.gan.loss)
        raw = merge_sections(raw, {"train": {"steps": steps, "sample_every": steps, "checkpoint_every": steps}})
        ExperimentConfig.from_dict(raw)  # fail before Ray on anything a key or value gets wrong
        rows.append(Row(name, source, raw, loss=experiment.gan.loss.name, generator_steps=steps,
                        images_seen=images_seen))
    return rows


def train_seconds(run_uri: str) -> float:
    """Seconds spent in training steps (not start-up, sampling or the FID): from the run's history."""
    from pokegan_ray.storage import location

    try:
        history = json.loads(location(run_uri).join("history.json").read_bytes())
    except Exception:  # a failed run has no history: its row says so already
        return math.nan
    seconds, previous = 0.0, 0
    for entry in history:
        if entry.get("images_per_second"):
            seconds += (entry["images_seen"] - previous) / entry["images_per_second"]
        previous = entry["images_seen"]
    return seconds


def run_row(row: Row, storage: str, stamp: str, weights: str | None) -> None:
    from pokegan_ray.training.trainer import TrainError, train

    print(f"\n=== {row.name}: {row.loss}, {row.generator_steps} generator steps, {row.images_seen:,} real images "
          f"({row.source})", flush=True)
    started = time.perf_counter()
    try:
        outcome = train(row.raw, storage_uri=storage, name=f"{stamp}-{row.name}", inception_weights=weights)
    except TrainError as error:
        row.status, row.message = "failed", str(error)
    else:
        row.status, row.message = outcome.status, outcome.message
        finite = outcome.status == "completed" and outcome.fid is not None and math.isfinite(outcome.fid)
        row.fid = float(outcome.fid) if finite else math.inf
        row.kid = float(outcome.metrics.get("kid", math.nan)) if finite else math.nan
        row.train_seconds = train_seconds(outcome.run_uri)
    row.seconds = time.perf_counter() - started


def row_line(row: Row) -> str:
    status = "" if row.status == "completed" else f"  [{row.status}: {row.message}]"
    return (f"{row.name:<17} {row.loss:<8} g_steps={row.generator_steps:>6} images={row.images_seen:>8,} "
            f"FID={row.fid:>8.2f} KID={row.kid:.4f} seconds={row.seconds:.0f} (training {row.train_seconds:.0f})"
            f"{status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40_000,
                        help="real images every recipe's D sees (default: 40000, ~20-26 minutes for five rows)")
    parser.add_argument("--eval-images", type=int, default=256, help="generated images per FID/KID (default: 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-best", help="a quick.yaml search's best_config.yaml (without it: no search-best row)")
    parser.add_argument("--data", default=None, help="the prepared set (default: the bundled set, prepared if absent)")
    parser.add_argument("--storage", default=None, help="where the runs go (default: a temporary folder, removed "
                                                        "at the end)")
    args = parser.parse_args()
    if args.images < 1 or args.eval_images < 2:
        parser.error("--images must be >= 1 and --eval-images >= 2")

    from pokegan_ray.cli import ensure_default_data, init_ray
    from pokegan_ray.defaults import DEFAULT_DATA_URI
    from pokegan_ray.metrics import weights_path_from_environment

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    args.data = args.data or DEFAULT_DATA_URI
    rows = build_rows(args)
    if not args.search_best:
        print("search-best: skipped (no --search-best given; run `pokegan tune --space search_spaces/quick.yaml` "
              "and pass its best_config.yaml)")
    storage = args.storage or tempfile.mkdtemp(prefix="pokegan-vs-seeds-")
    weights = weights_path_from_environment()
    weights = os.path.abspath(weights) if weights else None
    print(f"budget: {args.images:,} real images per recipe, FID/KID on {args.eval_images} generated images, "
          f"seed {args.seed}, data {args.data}, runs in {storage}", flush=True)

    init_ray()
    ensure_default_data({"data": {"uri": args.data}})
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    try:
        for row in rows:
            run_row(row, storage, stamp, weights)
            print(row_line(row), flush=True)
    finally:
        if not args.storage:
            shutil.rmtree(storage, ignore_errors=True)

    print(f"\nvs_seeds: {len(rows)} recipes in {time.perf_counter() - started:.0f} s, "
          f"N={args.eval_images} generated images per FID")
    for row in rows:
        print(row_line(row))
    best_seed = min(row.fid for row in rows if row.name in SEED_RECIPES)
    ours = min(row.fid for row in rows if row.name in OURS)
    ratio = ours / best_seed if best_seed > 0 and not (math.isinf(ours) and math.isinf(best_seed)) else math.nan
    sys.stdout.flush()
    print(f"vs_seeds: best_seed_fid={best_seed:.2f} ours_fid={ours:.2f} ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
