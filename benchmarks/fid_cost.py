"""What an FID evaluation costs, next to what training costs, on this machine.

1. Inception features of N real images (64 px uint8, the bundled set's originals);
2. the full FID + KID of a generator: generate N images with the default model's EMA-sized
   generator, extract their features, compare with the real statistics (computed in step 1);
3. 100 training steps of the default model (DCGAN 64 px, batch 64), plain PyTorch.

    python benchmarks/fid_cost.py [--images 1000] [--threads 2] [--device cpu|cuda]

Last line: `fid_cost: eval_s=<s> train100_s=<s> ratio=<eval/train100>`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
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
    print(f"fid_cost: eval_s={eval_seconds:.1f} train100_s={train_seconds:.1f} "
          f"ratio={eval_seconds / train_seconds:.2f}")


if __name__ == "__main__":
    main()
