"""What Ray Train costs per step, against the plain PyTorch loop the seeds used.

In one process, on the same model, batch and data (the bundled set's originals at 64 px):

1. plain: a single-process loop over a torch DataLoader, 2 threads, the same loss steps and EMA;
2. ray-1x2: `pokegan` training with one Ray Train worker and 2 torch threads;
3. ray-2x1: two DDP workers with 1 thread each (the same global batch).

Step times are steady-state: the first report window (start-up) and the last one (final
sample grid and FID) are left out. The data wait is the share of the step spent taking the
next real batch from the worker's in-memory shard.

    python benchmarks/train_overhead.py [--steps 60] [--batch 64] [--images 300]

Last line: `train_overhead: ray_vs_plain=<ratio> data_wait=<percent> two_workers_vs_one=<ratio>`
(ratio = Ray step time / plain step time; two_workers_vs_one = throughput of 2x1 / 1x2).
On a GPU (`--gpu`) it also prints DCGAN-64 images/s with bf16 and channels_last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch


def plain_step_seconds(data_uri: str, experiment, steps: int) -> float:
    """The seeds' way: one process, a DataLoader, no Ray."""
    from pokegan_ray.data.reader import read_images, to_model_range
    from pokegan_ray.losses import build_loss, build_optimizers
    from pokegan_ray.models import GeneratorEma, build_networks

    torch.set_num_threads(2)
    images, labels = read_images(data_uri, experiment.data.resolution, rows=experiment.data.rows)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=experiment.train.batch_size, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    generator, discriminator = build_networks(experiment.gan.model)
    optimizer_g, optimizer_d = build_optimizers(generator, discriminator, experiment.gan.loss)
    ema = GeneratorEma(generator, experiment.gan.loss.ema_decay)
    loss = build_loss(experiment.gan)
    durations, step = [], 0
    while step < steps:
        for real_uint8, _ in loader:
            started = time.perf_counter()
            loss.discriminator_step(generator, discriminator, optimizer_d, to_model_range(real_uint8))
            loss.generator_step(generator, discriminator, optimizer_g, experiment.train.batch_size)
            ema.update(generator)
            durations.append(time.perf_counter() - started)
            step += 1
            if step == steps:
                break
    return statistics.median(durations[5:])


def ray_run(data_uri: str, raw: dict, workers: int, threads: int, cpus: float, steps: int, report_every: int,
            storage: str, name: str) -> tuple[float, float]:
    """(steady-state seconds per step, data wait fraction) of one `pokegan` training run."""
    from pokegan_ray.training.config import merge_sections
    from pokegan_ray.training.trainer import train

    raw = merge_sections(raw, {
        "data": {"uri": data_uri},
        "train": {"steps": steps, "report_every": report_every, "eval_every": 0, "eval_images": 16,
                  "sample_every": steps, "checkpoint_every": steps},
        "scale": {"workers": workers, "threads_per_worker": threads, "cpus_per_worker": cpus},
    })
    outcome = train(raw, storage_uri=storage, name=name)
    if outcome.status != "completed":
        raise SystemExit(f"{name}: {outcome.status}: {outcome.message}")
    with open(os.path.join(storage, name, "history.json")) as handle:
        history = json.load(handle)
    steady = history[1:-1]  # without start-up and the final sample/FID window
    batch = raw["train"]["batch_size"]
    step_seconds = statistics.median(batch / entry["images_per_second"] for entry in steady)
    wait = statistics.median(entry["data_wait_fraction"] for entry in steady)
    return step_seconds, wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--report-every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=300, help="bundled images to prepare (originals only)")
    parser.add_argument("--gpu", action="store_true", help="also measure DCGAN-64 images/s on the GPU")
    args = parser.parse_args()

    import ray

    from pokegan_ray.data import PrepareOptions, prepare
    from pokegan_ray.training.config import ExperimentConfig

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    ray.init(logging_level="ERROR")  # with the dashboard: Ray Train polls its state API
    ray.data.DataContext.get_current().enable_progress_bars = False
    work = tempfile.mkdtemp(prefix="pokegan-overhead-")
    data_uri = os.path.join(work, "data")
    prepare("bundled", data_uri, PrepareOptions(resolutions=(64,), augment=0, limit=args.images))
    raw = {"train": {"batch_size": args.batch}}
    experiment = ExperimentConfig.from_dict(raw | {"data": {"uri": data_uri}})

    plain = plain_step_seconds(data_uri, experiment, args.steps)
    print(f"plain PyTorch, 1 process x 2 threads: {plain * 1000:.0f} ms/step "
          f"({args.batch / plain:.0f} img/s)", flush=True)
    one, wait_one = ray_run(data_uri, raw, 1, 2, 1.0, args.steps, args.report_every, work, "one-worker")
    print(f"pokegan, 1 Ray worker x 2 threads:   {one * 1000:.0f} ms/step ({args.batch / one:.0f} img/s), "
          f"data wait {wait_one:.2%}", flush=True)
    two, wait_two = ray_run(data_uri, raw, 2, 1, 0.5, args.steps, args.report_every, work, "two-workers")
    print(f"pokegan, 2 Ray workers x 1 thread:   {two * 1000:.0f} ms/step ({args.batch / two:.0f} img/s), "
          f"data wait {wait_two:.2%}", flush=True)
    if args.gpu and torch.cuda.is_available():
        gpu_batch = 2048
        gpu_raw = {"train": {"batch_size": gpu_batch, "mixed_precision": True}, "scale": {"use_gpu": True}}
        seconds, _ = ray_run(data_uri, gpu_raw, 1, 0, 1.0, args.steps, args.report_every, work, "gpu")
        print(f"pokegan, 1 GPU worker, bf16 + channels_last, batch {gpu_batch}: {gpu_batch / seconds:,.0f} img/s")
    ray.shutdown()
    print(f"train_overhead: ray_vs_plain={one / plain:.2f} data_wait={wait_one * 100:.2f}% "
          f"two_workers_vs_one={one / two:.2f}")


if __name__ == "__main__":
    main()
