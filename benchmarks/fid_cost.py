"""What an FID evaluation costs, next to what training costs, on this machine.

1. Inception features of N real images (64 px uint8, the bundled set's originals);
2. the full FID + KID of a generator: generate N images with the default model's EMA-sized
   generator, extract their features, compare with the real statistics (computed in step 1);
3. 100 training steps of the default model (DCGAN 64 px, batch 64), plain PyTorch;
4. the Inception pass itself, in variants: ms per image of `--variant-images` generated images and
   how far each variant's FID is from the float32, batch-16, NCHW baseline's (a variant is worth
   keeping only when it is faster and within 1e-3 of that FID). bf16 runs only on CUDA.

    python benchmarks/fid_cost.py [--images 1000] [--variant-images 256] [--threads 2] [--device cpu|cuda]

Last lines: one `fid_cost_variant: <name> ms_per_image=<ms> fid_delta=<|dFID|>` per variant, then
`fid_cost: eval_s=<s> train100_s=<s> ratio=<eval/train100>`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--variant-images", type=int, default=256,
                        help="generated images per Inception variant (0: skip the variants)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from pokegan_ray.data.images import DecodeLimits, decode_square_rgb, resize
    from pokegan_ray.data.sources import open_source
    from pokegan_ray.losses import build_loss, build_optimizers
    from pokegan_ray.metrics import RealStatsKey, evaluate_generator, load_inception, real_statistics_from_features
    from pokegan_ray.models import GeneratorEma, build_networks
    from pokegan_ray.training.config import ExperimentConfig

    source = open_source("bundled", limit=args.images)
    import numpy as np

    real = torch.from_numpy(np.stack([
        np.asarray(resize(decode_square_rgb(Path(image.path).read_bytes(), image.key, DecodeLimits()), 64))
        for image in source.images])).permute(0, 3, 1, 2).contiguous()
    extractor = load_inception(device=device)

    started = time.perf_counter()
    features = extractor.features(real)
    features_seconds = time.perf_counter() - started
    print(f"Inception features of {len(real)} real 64 px images on {device} ({args.threads} threads): "
          f"{features_seconds:.1f} s ({features_seconds / len(real) * 1000:.0f} ms/image)", flush=True)
    key = RealStatsKey.for_extractor(extractor, dataset_hash="benchmark", resolution_px=64, rows="originals",
                                     num_images=len(real))
    real_stats = real_statistics_from_features(features, key)

    experiment = ExperimentConfig()
    torch.manual_seed(0)
    generator, discriminator = build_networks(experiment.gan.model)
    generator.to(device)
    started = time.perf_counter()
    scores = evaluate_generator(generator, real=real_stats, extractor=extractor, num_images=len(real),
                                batch_size=64, latent_size=experiment.gan.model.latent_size, device=device)
    eval_seconds = time.perf_counter() - started
    print(f"full FID/KID of a generator, N={len(real)}: {eval_seconds:.1f} s (FID {scores['fid']:.1f} untrained)",
          flush=True)

    generator.cpu()
    optimizer_g, optimizer_d = build_optimizers(generator, discriminator, experiment.gan.loss)
    ema = GeneratorEma(generator, experiment.gan.loss.ema_decay)
    loss = build_loss(experiment.gan)
    batch = experiment.train.batch_size
    real_float = real.float() / 127.5 - 1
    started = time.perf_counter()
    for _ in range(100):
        index = torch.randint(len(real_float), (batch,))
        loss.discriminator_step(generator, discriminator, optimizer_d, real_float[index])
        loss.generator_step(generator, discriminator, optimizer_g, batch)
        ema.update(generator)
    train_seconds = time.perf_counter() - started
    print(f"100 training steps of the default model (DCGAN 64 px, batch {batch}) on cpu: {train_seconds:.1f} s",
          flush=True)
    if args.variant_images:
        for line in inception_variants(generator.to(device), experiment.gan.model.latent_size, real_stats, device,
                                       args.variant_images):
            print(line, flush=True)
    print(f"fid_cost: eval_s={eval_seconds:.1f} train100_s={train_seconds:.1f} "
          f"ratio={eval_seconds / train_seconds:.2f}")


class _Bfloat16(torch.nn.Module):
    """The network in bf16 (weights and activations), features back in float32."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network.to(torch.bfloat16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.to(torch.bfloat16)).float()


def inception_variants(generator, latent_size: int, real_stats, device: torch.device, num_images: int) -> list[str]:
    """ms per image and |FID - baseline FID| of the Inception pass in each variant, on the same images."""
    from pokegan_ray.metrics import feature_statistics, frechet_distance, load_inception, quantize_to_uint8

    torch.manual_seed(1)
    with torch.no_grad():
        images = quantize_to_uint8(generator.eval()(torch.randn(num_images, latent_size, device=device))).cpu()
    variants = [("float32 batch16 nchw (before)", {"batch_size": 16}), ("float32 batch8 nchw", {"batch_size": 8}),
                ("float32 batch32 nchw", {"batch_size": 32}), ("float32 batch64 nchw", {"batch_size": 64}),
                ("float32 batch8 channels_last", {"batch_size": 8, "channels_last": True}),
                ("float32 batch16 channels_last", {"batch_size": 16, "channels_last": True}),
                ("float32 batch32 channels_last", {"batch_size": 32, "channels_last": True}),
                ("bf16 batch64 channels_last", {"batch_size": 64, "channels_last": True, "bf16": True})]
    lines, baseline = [], None
    for name, options in variants:
        bf16 = options.pop("bf16", False)
        if bf16 and device.type != "cuda":
            lines.append(f"fid_cost_variant: {name} skipped (bf16 is measured on CUDA only)")
            continue
        extractor = load_inception(device=device, **options)
        if bf16:
            extractor.network = _Bfloat16(extractor.network)
        extractor.features(images[:options["batch_size"]])  # warm-up: first-call allocation and kernel choice
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        features = extractor.features(images)
        seconds = time.perf_counter() - started
        mu, sigma = feature_statistics(features)
        fid = frechet_distance(real_stats.mu, real_stats.sigma, mu, sigma)
        baseline = fid if baseline is None else baseline
        lines.append(f"fid_cost_variant: {name} ms_per_image={seconds / num_images * 1000:.1f} "
                     f"fid_delta={abs(fid - baseline):.2e}")
    return lines


if __name__ == "__main__":
    main()
