"""Parameter counts and the time of one full training step for every preset x upsampler at 64 px.

One step is what the loop does per generator step in steady state: `n_critic` discriminator
steps (from the preset's default config; the WGAN paper's 100-step warm-up is left out) and
one generator step, each with its backward pass, optimiser step, DiffAugment and, where the
loss has them, gradient penalty or weight clipping; the "lightweight" preset's D also runs its
reconstruction decoders on the real batch. Data are random tensors already in memory, so the
time is the models' and losses' alone.

    python benchmarks/model_step.py [--steps 3] [--batch 64] [--warmup 1]

The last line is `model_step: fastest=<name> <ms> slowest=<name> <ms>`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pokegan_ray.losses import PRESETS, GanConfig, build_loss, build_optimizers
from pokegan_ray.models import UPSAMPLERS, build_networks, count_parameters


def time_training_step_ms(config: GanConfig, batch_size: int, steps: int, warmup_steps: int) -> tuple[int, int, float]:
    """(generator parameters, discriminator parameters, median milliseconds per full step)."""
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    g_optimizer, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    loss = build_loss(config)
    resolution_px = config.model.resolution_px
    real_images = torch.rand(batch_size, 3, resolution_px, resolution_px) * 2 - 1
    real_labels = torch.randint(max(config.model.num_classes, 1), (batch_size,))

    def full_step() -> None:
        for _ in range(config.loss.n_critic):
            loss.discriminator_step(generator, discriminator, d_optimizer, real_images, real_labels)
        loss.generator_step(generator, discriminator, g_optimizer, batch_size, real_labels)

    for _ in range(warmup_steps):
        full_step()
    durations_ms = []
    for _ in range(steps):
        start = time.perf_counter()
        full_step()
        durations_ms.append((time.perf_counter() - start) * 1000)
    return count_parameters(generator), count_parameters(discriminator), statistics.median(durations_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median reported)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, kernel selection)")
    args = parser.parse_args()
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        parser.error("--steps and --batch must be >= 1, --warmup >= 0")

    print(f"64 px, batch {args.batch}, {torch.get_num_threads()} torch threads, median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'configuration':<22} {'G params':>10} {'D params':>10} {'n_critic':>8} {'ms/step':>10}")
    results: dict[str, float] = {}
    for preset in PRESETS:
        for upsampler in UPSAMPLERS:
            config = GanConfig.from_preset(preset, {"model": {"upsampler": upsampler, "resolution_px": 64}})
            g_params, d_params, step_ms = time_training_step_ms(config, args.batch, args.steps, args.warmup)
            name = f"{preset}/{upsampler}"
            results[name] = step_ms
            print(f"{name:<22} {g_params:>10,} {d_params:>10,} {config.loss.n_critic:>8} {step_ms:>10.1f}", flush=True)
    fastest = min(results, key=results.get)
    slowest = max(results, key=results.get)
    print(f"model_step: fastest={fastest} {results[fastest]:.1f} slowest={slowest} {results[slowest]:.1f}")


if __name__ == "__main__":
    main()
