"""One longer CPU run of a recipe, with its FID curve and sample grids: do its samples look like Pokémon?

Trains one of `vs_seeds.py`'s recipes (same networks, data, seed and FID protocol) for `--images`
real images, evaluating FID and KID on `--eval-images` generated images against all the bundled
originals `--evaluations` times along the way, and writes into `--out`:

- `final_grid.png`: the EMA generator's fixed-noise grid at the end;
- `history.png`: losses, and FID/KID over images seen (plus ADA's p when the recipe has it);
- `progress.gif`: every grid of the run;
- `fid_curve.json`: (images seen, FID, KID) at each evaluation.

    python benchmarks/long_run.py [--recipe pokegan-lightweight-ada] [--images 150000]
                                  [--eval-images 1008] [--evaluations 4] [--out artifacts/long_run]

The budget is `--images`. On this 2-core CPU the lightweight recipe trains at about 70 real
images/s and an evaluation at N=1008 takes about 2 minutes, so the defaults take about 44 min;
keep it under 45 minutes here. Last line: `long_run: recipe=<name> images=<n> fid=<final> kid=<final>`.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # vs_seeds.py, beside this file

import vs_seeds  # noqa: E402  (the recipes and their conversion to generator steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="pokegan-lightweight-ada", choices=[*vs_seeds.SEED_RECIPES,
                                                                            *vs_seeds.POKEGAN_RECIPES])
    parser.add_argument("--images", type=int, default=150_000, help="real images D sees (the budget)")
    parser.add_argument("--eval-images", type=int, default=1008)
    parser.add_argument("--evaluations", type=int, default=4, help="FID/KID evaluations along the run (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default="artifacts/long_run")
    args = parser.parse_args()
    if args.images < 1 or args.eval_images < 2 or args.evaluations < 1:
        parser.error("--images and --evaluations must be >= 1, --eval-images >= 2")

    from pokegan_ray.cli import ensure_default_data, init_ray
    from pokegan_ray.defaults import DEFAULT_DATA_URI
    from pokegan_ray.training.config import merge_sections
    from pokegan_ray.training.trainer import train

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    args.data = args.data or DEFAULT_DATA_URI
    args.search_best = None
    (row,) = vs_seeds.build_rows(args, [args.recipe])
    steps = row.generator_steps
    every = math.ceil(steps / args.evaluations)  # so the last evaluation is the final one, not one just before it
    raw = merge_sections(row.raw, {"train": {"eval_every": every, "sample_every": every, "checkpoint_every": every}})
    os.makedirs(args.out, exist_ok=True)
    storage = tempfile.mkdtemp(prefix="pokegan-long-run-")
    print(f"long_run: {args.recipe} ({row.source}), {steps} generator steps, {row.images_seen:,} real images, "
          f"FID/KID on {args.eval_images} generated images every {every} steps; runs in {storage}", flush=True)

    init_ray()
    ensure_default_data({"data": {"uri": args.data}})
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    try:
        outcome = train(raw, storage_uri=storage, name=f"{stamp}-{args.recipe}")
        run = outcome.run_uri
        history = json.loads(open(os.path.join(run, "history.json"), encoding="utf-8").read())
        curve = [{"images_seen": e["images_seen"], "fid": e["fid"], "kid": e.get("kid")} for e in history if "fid" in e]
        with open(os.path.join(args.out, "fid_curve.json"), "w", encoding="utf-8") as handle:
            json.dump(curve, handle, indent=1)
        shutil.copyfile(outcome.sample_grid_uri, os.path.join(args.out, "final_grid.png"))
        for name in ("history.png", "progress.gif"):
            shutil.copyfile(os.path.join(run, name), os.path.join(args.out, name))
    finally:
        shutil.rmtree(storage, ignore_errors=True)

    for point in curve:
        print(f"  images {point['images_seen']:>8,.0f}  FID {point['fid']:7.2f}  KID {point['kid']:.4f}")
    print(f"status {outcome.status}: {outcome.message}; grids, history.png and fid_curve.json in {args.out}")
    final = curve[-1] if curve else {"fid": float("inf"), "kid": float("nan")}
    print(f"long_run: recipe={args.recipe} images={row.images_seen} fid={final['fid']:.2f} kid={final['kid']:.4f}")


if __name__ == "__main__":
    main()
