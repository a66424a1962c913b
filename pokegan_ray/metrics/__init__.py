"""FID and KID with the standard Inception weights, offline, with cached real statistics.

Typical use (the CLI resolves the weights path; the library never reads the environment)::

    extractor = load_inception(weights_path_from_environment(), device="cuda")
    key = RealStatsKey.for_extractor(extractor, dataset_hash=manifest_hash, resolution_px=64,
                                     rows="originals", num_images=len(real_set))
    real = real_statistics(default_cache_root(dataset_location), key,
                           lambda: extractor.features_of_batches(real_uint8_batches()))
    scores = evaluate_generator(generator, real=real, extractor=extractor, num_images=1000,
                                batch_size=64, latent_size=100, device="cuda")

Protocol: every image, real or generated, becomes uint8 first (generated ones as
round((x + 1) * 127.5), clamped), then is resized to 299x299 by torch's antialiased bicubic
filter on the float values of those pixels, clipped to [0, 255] and scaled (x - 128) / 128
for the TensorFlow FID Inception (2015-12-05 weights, 2048-d pool3 features). This is
clean-fid's "clean" protocol, done batched in torch: it agrees with clean-fid's PIL resize to
within 0.006 grey levels. We chose it over torch-fidelity's TF1-style bilinear resize because
it treats both sides identically and does not alias, and because comparing our own runs
matters more than matching legacy published numbers. Statistics are float64, FID's
matrix square root is taken by symmetric eigendecompositions (exact, stable, 7x faster
than pytorch-fid's scipy sqrtm, which the tests use as the reference), and KID is the unbiased cubic-kernel MMD² over 100 subsets of
min(1000, n_real, n_fake) rows. The protocol's name and the weights' sha256 are part of every
real-statistics cache key, so changing either can never reuse stale statistics.
"""

from pokegan_ray.metrics.cache import (
    KID_FEATURES_MAX,
    RealStatistics,
    RealStatsKey,
    default_cache_root,
    real_statistics,
    real_statistics_from_features,
)
from pokegan_ray.metrics.evaluation import (
    check_compatible,
    evaluate_generator,
    generated_features,
    merge_batch_features,
    sample_latents_and_labels,
    scores_from_features,
)
from pokegan_ray.metrics.inception import (
    FEATURE_DIM,
    PROTOCOL,
    WEIGHTS_ENVIRONMENT_VARIABLE,
    InceptionFeatureExtractor,
    InceptionWeights,
    InceptionWeightsError,
    default_weights_path,
    load_inception,
    quantize_to_uint8,
    resize_for_inception,
    weights_path_from_environment,
)
from pokegan_ray.metrics.statistics import feature_statistics, frechet_distance, kernel_inception_distance

__all__ = [
    "FEATURE_DIM",
    "KID_FEATURES_MAX",
    "PROTOCOL",
    "WEIGHTS_ENVIRONMENT_VARIABLE",
    "InceptionFeatureExtractor",
    "InceptionWeights",
    "InceptionWeightsError",
    "RealStatistics",
    "RealStatsKey",
    "check_compatible",
    "default_cache_root",
    "default_weights_path",
    "evaluate_generator",
    "feature_statistics",
    "frechet_distance",
    "generated_features",
    "kernel_inception_distance",
    "load_inception",
    "merge_batch_features",
    "quantize_to_uint8",
    "real_statistics",
    "real_statistics_from_features",
    "resize_for_inception",
    "sample_latents_and_labels",
    "scores_from_features",
    "weights_path_from_environment",
]
