"""FID of the seeds' training recipes against pokegan's, at the same number of real images seen.

The project grew from five public Pokémon GANs; their write-ups (the shared seeds/ folder, listed
by its README.md) are the source of every seed row, cited by file name. Each row below trains one
recipe with `pokegan train` machinery (1 Ray worker, 2 torch threads, the same data, seed and FID
protocol) until D has seen `--images` real images, then scores the generator it samples from.

Seed rows (the recipe of each write-up, as written; SEED_RECIPES says what came from where):

1. pokegans-wgan-gp: 000 pokeGANs (lanpartis/pokeGANs), WGAN-GP, one critic step;
2. ankitesh-wgan:    001 WGAN with weight clipping (ankitesh97/GANS), RMSProp, 5 critic steps;
3. whos-that-dcgan:  002 "Who's that Pokémon", DCGAN, its run 3 (the run it presents as its result);
4. mrm-dcgan:        003 MRM (kumudlakara/MRM), DCGAN at lr 3e-4: constant, as its code really trains;
5. mrm-dcgan-decay:  003 with the decay it meant to apply (D x0.8, G x0.9 every ten epochs);
6. iconclass-wgan-gp: 004 GAN_IconClass (BenoitLeguay), WGAN-GP with a BatchNorm-free critic.

pokegan rows:

7. pokegan-default:         the ExperimentConfig defaults (DCGAN loss, DiffAugment, EMA of G);
8. pokegan-lightweight:     `model.architecture: lightweight` (FastGAN-style G with skip-layer
                            excitation, self-supervised D with a reconstruction decoder), hinge
                            loss, DiffAugment and EMA as pokegan-default;
9. pokegan-lightweight-ada: the same with adaptive augmentation (StyleGAN2-ADA's p) and lazy R1
                            (gamma 0.1, every 16 D steps);
10. search-best: the recipe of a `pokegan tune --space search_spaces/quick.yaml` search's
    best_config.yaml (`--search-best`; the row is skipped without it).

What is compared is the training recipe (loss, optimiser, learning rates and their schedule,
batch size, critic schedule, clipping or penalty, DiffAugment, EMA), at equal compute on this
CPU. The networks are the same for every seed row and for pokegan-default (the quick.yaml widths:
32 base channels in G and D, latent size 64, 64 px, DCGAN with transposed convolutions; only the
critic's norm follows each seed), even where a seed used other widths, 128 px or another latent
size. The pokegan-lightweight rows train the lightweight architecture at the same widths and
latent size, because that architecture is what they compare; search-best keeps the upsampler its
search chose. Seed recipes get neither DiffAugment nor an EMA (they had none). Every row trains
on the same prepared set (the bundled 1008 Pokémon plus 10 augmented versions of each, 11,088
rows at 64 px), so a seed's own offline augmentation is not reproduced.

Images seen counts real images shown to D (D batches x batch size), so a recipe with 5 critic
steps per generator step gets a fifth of the generator steps of a DCGAN. Each row trains the
fewest generator steps whose D batches reach `--images`. Epochs are of the prepared set: at the
default 40,000 images a row trains ~3.6 epochs, so mrm-dcgan-decay's first decay (after 10 epochs,
110,080 images at batch 128) never comes and it trains exactly as mrm-dcgan; pass
`--images 120000` or more to see the decay act (the script says so before training).

FID and KID are on `--eval-images` generated images (default 1008) against the statistics of all
the set's real originals (the evaluator always uses rows=originals, whatever data.rows trains
on; each row prints N generated/N real). At N >= 1000 the 2048-d feature covariance is far less
rank-starved than at the few hundred images a training-time evaluation affords; FIDs are only
comparable at the same N.

    python benchmarks/vs_seeds.py [--images 40000] [--eval-images 1008] [--seed 0]
                                  [--rows NAME[,NAME...]] [--search-best SEARCH/best_config.yaml]
                                  [--data URI] [--storage URI]

Run time on this 2-core CPU, all nine rows at the defaults: about 1-1.5 hours. Training is
~30 minutes of it (throughput of quick.yaml trials here: ~270 real images/s for DCGAN, ~115 for
WGAN-GP with one critic step; a lightweight step takes ~1.7x a DCGAN step at these widths, by
benchmarks/model_step.py's timing); start-up is ~0.5-1 minute a row, and the FID at N=1008 ~2-6
minutes a row (Inception takes ~0.1-0.35 s an image here, the slower end when the cores are
shared), plus ~2-6 minutes once for the real statistics when the set has none cached. `--rows`
runs a subset.

Last line: `vs_seeds: best_seed_fid=<x> ours_fid=<y> ratio=<y/x>`, x the best seed row run, y the
best pokegan row run (pokegan-* and search-best); a failed or non-finite run counts as FID inf, and a
ratio against a side without an FID is nan. With both search-best and pokegan-default, the line before it
is `vs_seeds: search_best_fid=<y> default_fid=<x> ratio=<y/x>`.
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
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pokegan_ray.training.config import ExperimentConfig

RESOLUTION_PX = 64
# Every row trains these networks (search_spaces/quick.yaml's base), so only the recipe differs; the
# pokegan-lightweight rows swap the architecture, nothing else.
SHARED_MODEL = {"architecture": "dcgan", "generator_channels": 32, "discriminator_channels": 32, "latent_size": 64,
                "upsampler": "transposed", "conditional": False}

# The seeds had neither DiffAugment nor an average of G: turn both off. ema_decay 0 makes the
# evaluated "EMA" generator an exact copy of G after every step (GeneratorEma lerps by 1 - decay).
NO_POKEGAN_EXTRAS = {"augment_policy": "", "ema_decay": 0.0}

# name -> (where the recipe comes from, raw config sections). Only keys pokegan's config has, with
# the write-up's own numbers; what a seed did that pokegan cannot express is said next to it. No
# seed row takes the seed's widths, resolution or latent size (see the module docstring).
SEED_RECIPES: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    # 000_c38e3c82b7ea81af.txt (pokeGANs, PyTorch, 128 px): WGAN-GP with LAMBDA = 10, d_iter = g_iter = 1,
    # latent_dim = 128, 3000 epochs, BatchNorm in the critic. The write-up shows neither optimiser nor
    # batch size; they come from the repository it links (lanpartis/pokeGANs run.py, its stored
    # .ipynb_checkpoints copy): Adam 1e-4 for both, betas (0.01, 0.9), batch 64, z uniform in [0, 1).
    # Not expressible: BatchNorm in the critic (it breaks the per-sample penalty; pokegan refuses it with
    # WGAN-GP, so layer norm, the paper's choice, stands in), dropout 0.5 before the critic's last
    # layer, and its interpolation weight drawn per pixel (torch.rand(rdata.size())), not per sample.
    "pokegans-wgan-gp": ("seed write-up 000_c38e3c82b7ea81af.txt (+ lanpartis/pokeGANs run.py)", {
        "model": {"discriminator_norm": "layer"},
        "loss": {"name": "wgan-gp", "generator_learning_rate": 1e-4, "discriminator_learning_rate": 1e-4,
                 "adam_betas": [0.01, 0.9], "n_critic": 1, "paper_critic_schedule": False, "gp_weight": 10.0,
                 **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 64},
    }),
    # 001_f11aa47cd306b1e1.txt (WGAN, TensorFlow, 128 px; 819 Pokémon flipped and rotated to 8190):
    # RMSProp learning_rate = 2e-4 for both networks (not the WGAN paper's 5e-5), clip 0.01, d_iters = 5,
    # BATCH_SIZE = 64, random_dim = 100 uniform in [-1, 1], BatchNorm in the critic (conv2-4), 1000 epochs.
    # Its warm-up took 25 critic steps (not the paper's 100) for the first 25 generator steps and every
    # 500th; pokegan's schedule only knows the paper's 100, which would spend 4x the seed's warm-up
    # images, so the schedule is off and every generator step gets 5 critic steps: this favours the
    # seed (more generator steps for the same images). The seed clipped before each critic step,
    # pokegan after; its leaky ReLU slope was 0.3 (pokegan's 0.2).
    "ankitesh-wgan": ("seed write-up 001_f11aa47cd306b1e1.txt", {
        "model": {"discriminator_norm": "batch"},
        "loss": {"name": "wgan", "generator_learning_rate": 2e-4, "discriminator_learning_rate": 2e-4,
                 "clip_value": 0.01, "n_critic": 5, "paper_critic_schedule": False, **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 64},
    }),
    # 002_5aa83d53a92705b4.txt ("Who's that Pokémon", PyTorch): four hand-tuned runs (its Table 1); run 3
    # is the one it presents as its result ("the results of the third run appear to show some form of
    # limbs", the longest-trained): 128 px, batch 128, learning rate 2e-4, latent space 256, 200 epochs.
    # D ends in a sigmoid (BCE: pokegan's "dcgan" loss), BatchNorm in D's inner blocks. The write-up
    # shows no optimiser code, so Adam's betas are the dcgan loss's default (0.5, 0.999), the DCGAN
    # paper's. Not expressible: its x13 offline augmentation (flips, vertical flips, colour jitter with
    # hue 0.5, solarize, rotation 30 degrees), applied again on the fly when reading.
    "whos-that-dcgan": ("seed write-up 002_5aa83d53a92705b4.txt (run 3)", {
        "model": {},
        "loss": {"name": "dcgan", "generator_learning_rate": 2e-4, "discriminator_learning_rate": 2e-4,
                 **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 128},
    }),
    # 003_be0c5ae5288d9410.txt (MRM, PyTorch, 64 px): lrd = lrg = 0.0003, Adam beta1 = 0.5 (beta2 0.999),
    # batch_size = 128, nz = 100, ngf = ndf = 64, BCE, 1000 epochs. Its "decay" rebinds the Python floats
    # lrd and lrg after the optimisers were built from them, so it never reaches param_groups: as
    # written the rates stay at 3e-4 for the whole run. Not expressible: G's step reuses D's fake batch
    # instead of drawing new noise.
    "mrm-dcgan": ("seed write-up 003_be0c5ae5288d9410.txt (as written: constant rate)", {
        "model": {},
        "loss": {"name": "dcgan", "generator_learning_rate": 3e-4, "discriminator_learning_rate": 3e-4,
                 "adam_betas": [0.5, 0.999], "lr_schedule": "constant", **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 128},
    }),
    # 003 again, with the decay it meant: lrd -= 0.2 * lrd and lrg -= 0.1 * lrg every ten epochs. Its
    # epochs were of its large_dataset (11,000+ images; the small one had 806), about pokegan's prepared
    # set (11,088 rows at 64 px), so ten epochs stay ten epochs. Simplified: the seed's first decay came
    # after epoch 0 (epoch % 10 == 0), pokegan's after epoch 10, and the seed also cut G's rate after
    # epochs divisible by 11 or 12 (e.g. after 10, 11 and 12); here G's rate falls x0.9 every ten epochs.
    "mrm-dcgan-decay": ("seed write-up 003_be0c5ae5288d9410.txt (its intended decay)", {
        "model": {},
        "loss": {"name": "dcgan", "generator_learning_rate": 3e-4, "discriminator_learning_rate": 3e-4,
                 "adam_betas": [0.5, 0.999], "lr_schedule": "step", "lr_step_epochs": 10,
                 "generator_lr_step_factor": 0.9, "discriminator_lr_step_factor": 0.8, **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 128},
    }),
    # 004_fc5b746df96514eb.txt (GAN_IconClass, 64 px sprites): it compares DCGAN, WGAN-GP and AC-GAN;
    # its closing comparison (the result it draws) is on WGAN samples, so this row is its WGAN-GP: the
    # critic without BatchNorm ("I remove the Batch Normalization Layer"), z = 100 normal. Its
    # hyper-parameter sections (learning rate, Z, label smoothing, instance noise) are empty, with no
    # lambda, critic steps, learning rates or batch size given, so those are pokegan's wgan-gp defaults,
    # the WGAN-GP paper's: Adam 1e-4, betas (0, 0.9), 5 critic steps, lambda 10, and batch 64. Not
    # used: its ColorPicker generator (pokegan's `model.upsampler: palette`), which it found gave the
    # most uniform colours, because every seed row shares the transposed-convolution networks; its G's
    # dropout is not expressible.
    "iconclass-wgan-gp": ("seed write-up 004_fc5b746df96514eb.txt (WGAN-GP)", {
        "model": {"discriminator_norm": "none"},
        "loss": {"name": "wgan-gp", **NO_POKEGAN_EXTRAS},
        "train": {"batch_size": 64},
    }),
}

# FastGAN's own block (nearest-upsample + conv), as pokegan's "lightweight" preset has it.
LIGHTWEIGHT = {"model": {"architecture": "lightweight", "upsampler": "upsample"}, "loss": {"name": "hinge"}}
# pokegan's own recipes; DiffAugment (color, translation, cutout) and the EMA of G are the defaults.
DEFAULT_ROW = "pokegan-default"
POKEGAN_RECIPES: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    DEFAULT_ROW: ("ExperimentConfig defaults", {}),
    "pokegan-lightweight": ("architecture lightweight + hinge loss", LIGHTWEIGHT),
    "pokegan-lightweight-ada": ("lightweight + adaptive augmentation + R1 0.1", {
        "model": LIGHTWEIGHT["model"],
        "loss": {**LIGHTWEIGHT["loss"], "augment_probability": "adaptive", "r1_gamma": 0.1},
    }),
}
SEARCH_BEST = "search-best"
ALL_ROWS = (*SEED_RECIPES, *POKEGAN_RECIPES, SEARCH_BEST)


@dataclass
class Row:
    name: str
    source: str
    raw: dict[str, dict[str, Any]]
    experiment: ExperimentConfig
    generator_steps: int = 0
    images_seen: int = 0
    status: str = "not run"
    message: str = ""
    fid: float = math.inf
    kid: float = math.nan
    epochs: float = math.nan
    generated_images: int = 0
    real_images: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0


def generator_steps_for(images: int, batch_size: int, loss_config) -> tuple[int, int]:
    """(generator steps, real images D sees): the fewest steps whose critic batches reach `images`,
    counting the loss's own critic steps before each generator step (the WGAN paper's schedule included)."""
    from pokegan_ray.losses.gan_losses import steps_to_reach

    steps, batches = steps_to_reach(max(1, math.ceil(images / batch_size)), loss_config)
    return steps, batches * batch_size


def common_sections(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "data": {"uri": args.data, "resolution": RESOLUTION_PX, "rows": "all"},
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


def selected_rows(text: str | None, search_best: str | None) -> list[str]:
    """The row names `--rows` asks for (all by default, search-best only with --search-best), in table order."""
    if text is None:
        return [name for name in ALL_ROWS if name != SEARCH_BEST or search_best]
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(ALL_ROWS))
    if unknown or not names:
        raise ValueError(f"--rows: unknown row(s) {', '.join(unknown) or '(none given)'}; choose from: "
                         f"{', '.join(ALL_ROWS)}")
    if SEARCH_BEST in names and not search_best:
        raise ValueError("--rows search-best needs --search-best SEARCH/best_config.yaml")
    return [name for name in ALL_ROWS if name in names]


def build_rows(args: argparse.Namespace, names: list[str]) -> list[Row]:
    """The chosen rows' validated raw configs, with their generator steps for the image budget (no Ray yet)."""
    from pokegan_ray.training.config import ExperimentConfig, merge_sections

    recipes = {**SEED_RECIPES, **POKEGAN_RECIPES}
    if SEARCH_BEST in names:
        sections, notes = search_best_sections(args.search_best)
        for note in notes:
            print(f"search-best: set to the shared networks: {note}")
        recipes[SEARCH_BEST] = (args.search_best, sections)
    common = common_sections(args)
    rows = []
    for name in names:
        source, sections = recipes[name]
        raw = merge_sections(common, sections)
        experiment = ExperimentConfig.from_dict(raw)
        steps, images_seen = generator_steps_for(args.images, experiment.train.batch_size, experiment.gan.loss)
        raw = merge_sections(raw, {"train": {"steps": steps, "sample_every": steps, "checkpoint_every": steps}})
        experiment = ExperimentConfig.from_dict(raw)  # fail before Ray on anything a key or value gets wrong
        rows.append(Row(name, source, raw, experiment, generator_steps=steps, images_seen=images_seen))
    return rows


def budget_notes(rows: list[Row], manifest: dict[str, Any], eval_images: int) -> list[str]:
    """What the reader should know about N and the step-decay rows at this budget, from the prepared set's size."""
    originals = manifest["originals_per_resolution"]
    set_rows = manifest["rows_per_resolution"][str(RESOLUTION_PX)]
    notes = [(f"FID/KID reference: the statistics of all {originals} real originals; {eval_images} generated "
              f"images per row; an epoch is {set_rows:,} rows of the prepared set")]
    if eval_images < min(originals, 1000):
        notes.append(f"--eval-images {eval_images} < {min(originals, 1000)}: a rank-starved feature covariance "
                     "biases FID upwards; fine for a smoke test, not for the comparison")
    for row in rows:
        loss, batch_size = row.experiment.gan.loss, row.experiment.train.batch_size
        if loss.lr_schedule == "step":
            first_decay = math.ceil(loss.lr_step_epochs * (set_rows // batch_size)) * batch_size
            if row.images_seen <= first_decay:
                notes.append(f"{row.name}: its first rate decay comes after {loss.lr_step_epochs:g} epochs "
                             f"({first_decay:,} images); at {row.images_seen:,} it trains at constant rates")
    return notes


def train_seconds(run_uri: str) -> float:
    """Seconds spent in training steps (not start-up, sampling or the FID): from the run's history."""
    from pokegan_ray.storage import StorageError, location

    try:
        history = json.loads(location(run_uri).join("history.json").read_bytes())
    except (StorageError, ValueError):  # a failed run has no (whole) history: its row says so already
        return math.nan
    seconds, previous = 0.0, 0
    for entry in history:
        if entry.get("images_per_second"):
            seconds += (entry["images_seen"] - previous) / entry["images_per_second"]
        previous = entry["images_seen"]
    return seconds


def run_row(row: Row, storage: str, stamp: str, weights: str | None) -> None:
    from pokegan_ray.training.trainer import TrainError, train

    print(f"\n=== {row.name}: {row.experiment.gan.loss.name}, {row.generator_steps} generator steps, "
          f"{row.images_seen:,} real images ({row.source})", flush=True)
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
        row.epochs = float(outcome.metrics.get("epoch", math.nan))
        row.generated_images = int(outcome.metrics.get("fid_num_images", 0))
        row.real_images = int(outcome.metrics.get("fid_real_images", 0))
        row.train_seconds = train_seconds(outcome.run_uri)
    row.seconds = time.perf_counter() - started


def row_line(row: Row) -> str:
    status = "" if row.status == "completed" else f"  [{row.status}: {row.message}]"
    return (f"{row.name:<23} {row.experiment.gan.loss.name:<7} g_steps={row.generator_steps:>6} "
            f"images={row.images_seen:>8,} epochs={row.epochs:>4.1f} FID={row.fid:>7.2f} KID={row.kid:.4f} "
            f"N={row.generated_images}/{row.real_images} seconds={row.seconds:.0f} "
            f"(training {row.train_seconds:.0f}){status}")


def _ratio(ours: float, theirs: float) -> float:
    """ours / theirs; nan where the side compared against has no FID (not run, or failed), so a missing row
    never reads as a win; inf where only ours failed."""
    return ours / theirs if 0 < theirs < math.inf else math.nan


def search_line(rows: list[Row]) -> str | None:
    """`vs_seeds: search_best_fid=<y> default_fid=<x> ratio=<y/x>` when both rows ran: does a quick.yaml
    search's pick beat pokegan's defaults at the same images seen?"""
    fids = {row.name: row.fid for row in rows}
    if SEARCH_BEST not in fids or DEFAULT_ROW not in fids:
        return None
    search_best, default = fids[SEARCH_BEST], fids[DEFAULT_ROW]
    return (f"vs_seeds: search_best_fid={search_best:.2f} default_fid={default:.2f} "
            f"ratio={_ratio(search_best, default):.3f}")


def summary_line(rows: list[Row]) -> str:
    best_seed = min((row.fid for row in rows if row.name in SEED_RECIPES), default=math.inf)
    ours = min((row.fid for row in rows if row.name not in SEED_RECIPES), default=math.inf)
    return f"vs_seeds: best_seed_fid={best_seed:.2f} ours_fid={ours:.2f} ratio={_ratio(ours, best_seed):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40_000,
                        help="real images every recipe's D sees (default: 40000, ~1-1.5 hours for nine rows)")
    parser.add_argument("--eval-images", type=int, default=1008,
                        help="generated images per FID/KID (default: 1008, the bundled set's originals)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", help=f"comma-separated rows to run (default: all); from {', '.join(ALL_ROWS)}")
    parser.add_argument("--search-best", help="a quick.yaml search's best_config.yaml (without it: no search-best row)")
    parser.add_argument("--data", default=None, help="the prepared set (default: the bundled set, prepared if absent)")
    parser.add_argument("--storage", default=None, help="where the runs go (default: a temporary folder, removed "
                                                        "at the end)")
    args = parser.parse_args()
    if args.images < 1 or args.eval_images < 2:
        parser.error("--images must be >= 1 and --eval-images >= 2")
    try:
        names = selected_rows(args.rows, args.search_best)
    except ValueError as error:
        parser.error(str(error))

    from pokegan_ray.cli import ensure_default_data, init_ray
    from pokegan_ray.data.prepare import read_manifest
    from pokegan_ray.defaults import DEFAULT_DATA_URI
    from pokegan_ray.metrics import weights_path_from_environment
    from pokegan_ray.storage import location

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    args.data = args.data or DEFAULT_DATA_URI
    rows = build_rows(args, names)
    if not args.search_best and args.rows is None:
        print("search-best: skipped (no --search-best given; run `pokegan tune --space search_spaces/quick.yaml` "
              "and pass its best_config.yaml)")
    storage = args.storage or tempfile.mkdtemp(prefix="pokegan-vs-seeds-")
    weights = weights_path_from_environment()
    weights = os.path.abspath(weights) if weights else None
    print(f"budget: {args.images:,} real images per recipe, FID/KID on {args.eval_images} generated images, "
          f"seed {args.seed}, data {args.data}, runs in {storage}", flush=True)

    init_ray()
    ensure_default_data({"data": {"uri": args.data}})
    for note in budget_notes(rows, read_manifest(location(args.data)), args.eval_images):
        print(f"note: {note}", flush=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
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
    sys.stdout.flush()
    if (line := search_line(rows)) is not None:
        print(line)
    print(summary_line(rows))


if __name__ == "__main__":
    main()
