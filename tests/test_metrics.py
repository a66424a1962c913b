"""FID/KID maths on synthetic features, and the real-statistics cache (local folder and S3).

The Inception network itself is exercised in test_metrics_inception.py; everything here is
fast because it never runs it.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import scipy.linalg
import torch

from pokegan_ray.metrics import (
    KID_FEATURES_MAX,
    RealStatsKey,
    default_cache_root,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    real_statistics,
    sample_latents_and_labels,
)
from pokegan_ray.metrics.statistics import _subset_mmd2, covariance_root, fid_infinity, frechet_distance_to_sample
from pokegan_ray.storage import location


def random_covariance(rng: np.random.Generator, dim: int) -> np.ndarray:
    factor = rng.normal(size=(dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


def reference_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's formula, independent of ours: scipy's general matrix square root of Σ1Σ2."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if np.iscomplexobj(root):
        root = root.real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


# -- FID ------------------------------------------------------------------------------------


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    var1, var2 = rng.uniform(0.1, 4, size=16), rng.uniform(0.1, 4, size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-7)


def test_frechet_matches_scipy_sqrtm_reference_on_random_covariances():
    rng = np.random.default_rng(2)
    for dim in (3, 40):
        mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
        sigma1, sigma2 = random_covariance(rng, dim), random_covariance(rng, dim)
        assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
            reference_frechet(mu1, sigma1, mu2, sigma2), rel=1e-7, abs=1e-9)


def test_frechet_of_a_set_with_itself_is_zero_and_it_is_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 32))
    b = rng.normal(loc=0.3, size=(300, 32)) * 1.5
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    assert abs(frechet_distance(mu_a, sigma_a, mu_a, sigma_a)) < 1e-8
    forward, backward = frechet_distance(mu_a, sigma_a, mu_b, sigma_b), frechet_distance(mu_b, sigma_b, mu_a, sigma_a)
    assert forward > 1.0
    assert forward == pytest.approx(backward, rel=1e-9)


def test_frechet_handles_rank_deficient_covariances():
    # Fewer samples than dimensions, as with a small evaluation sample and 2048-d features.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(12, 64)), rng.normal(loc=0.5, size=(12, 64))
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    assert np.linalg.matrix_rank(sigma_a) < 64
    self_distance = frechet_distance(mu_a, sigma_a, mu_a, sigma_a)
    distance = frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    assert abs(self_distance) < 1e-4 * np.trace(sigma_a)
    assert np.isfinite(distance) and distance == pytest.approx(reference_frechet(mu_a, sigma_a, mu_b, sigma_b),
                                                              rel=1e-5)


def test_frechet_rejects_a_covariance_that_is_not_positive_semidefinite():
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("rows", [40, 300])  # fewer rows than dimensions (the rung's case), and more
def test_frechet_to_a_sample_equals_the_full_computation(rows):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(500, 128)) * rng.uniform(0.2, 2.0, size=128)
    fake = rng.normal(size=(rows, 128)) * 0.7 + 0.2
    mu, sigma = feature_statistics(real)
    expected = frechet_distance(mu, sigma, *feature_statistics(fake))
    assert frechet_distance_to_sample(mu, covariance_root(sigma), fake) == pytest.approx(expected, rel=1e-7)


def test_fid_infinity_removes_most_of_the_small_sample_bias():
    # A sample from the reference distribution itself: FID's true value is ~0, yet FID at N=64 in 32
    # dimensions is far from it; the bias is ~k/N, which the extrapolation to 1/N = 0 takes away.
    rng = np.random.default_rng(4)
    scales = rng.uniform(0.5, 2.0, size=32)
    mu, sigma = feature_statistics(rng.normal(size=(20000, 32)) * scales)
    fake = rng.normal(size=(64, 32)) * scales
    root = covariance_root(sigma)
    at_n = frechet_distance_to_sample(mu, root, fake)
    assert at_n > 10
    assert abs(fid_infinity(mu, root, fake, seed=0)) < 0.25 * at_n
    with pytest.raises(ValueError, match="at least 4"):
        fid_infinity(mu, root, fake[:3])


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
    features = np.random.default_rng(5).normal(size=(50, 6)).astype(np.float32)
    mu, sigma = feature_statistics(features)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    centred = features.astype(np.float64) - features.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(features[:1])


# -- KID ------------------------------------------------------------------------------------


def naive_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    def k(a, b):
        return (a @ b / a.shape[0] + 1) ** 3

    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return within - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)


def test_kid_of_one_whole_subset_matches_the_textbook_estimator():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 5)), rng.normal(loc=0.4, size=(7, 5))
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=7)
    assert mean == pytest.approx(naive_unbiased_mmd2(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(600, 64))
    same = rng.normal(size=(400, 64))
    kid_same, _ = kernel_inception_distance(real, same)
    kid_small, _ = kernel_inception_distance(real, same + 0.2)
    kid_large, std_large = kernel_inception_distance(real, same + 0.6)
    assert 0 < kid_small < kid_large
    assert abs(kid_same) < 0.05 * kid_small
    assert std_large > 0  # subsets of 400 out of 600 real rows differ


def test_kid_is_unbiased_where_including_the_diagonal_would_not_be():
    # Averaged over many small samples of one distribution, an unbiased MMD² estimate is 0;
    # the biased V-statistic (diagonal kernel terms kept) sits clearly above 0.
    rng = np.random.default_rng(8)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
        unbiased.append(kernel_inception_distance(x, y, num_subsets=1, subset_size=10)[0])
        kernel = lambda a, b: (a @ b.T / 4 + 1) ** 3  # noqa: E731
        biased.append(kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean())
    standard_error = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 4 * standard_error
    assert np.mean(biased) > 10 * standard_error


def test_kid_subset_paths_agree():
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(40, 8)), rng.normal(loc=0.2, size=(30, 8))
    subsets = [(rng.choice(40, 20, replace=False), rng.choice(30, 20, replace=False)) for _ in range(5)]
    np.testing.assert_allclose(_subset_mmd2(real, fake, subsets, precompute_kernels=True),
                               _subset_mmd2(real, fake, subsets, precompute_kernels=False), rtol=1e-10)


def test_kid_subset_size_fits_small_samples_and_rejects_impossible_ones():
    rng = np.random.default_rng(10)
    real, fake = rng.normal(size=(1200, 8)), rng.normal(size=(300, 8))
    mean, _ = kernel_inception_distance(real, fake, num_subsets=10)  # default size min(1000, 1200, 300) = 300
    assert np.isfinite(mean)
    with pytest.raises(ValueError, match="subset size"):
        kernel_inception_distance(real, fake, subset_size=301)
    with pytest.raises(ValueError, match="subset size"):
        kernel_inception_distance(real[:1], fake)


def test_kid_is_repeatable_for_a_seed():
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(100, 8)), rng.normal(size=(80, 8))
    assert kernel_inception_distance(real, fake, seed=3) == kernel_inception_distance(real, fake, seed=3)
    assert kernel_inception_distance(real, fake, seed=3) != kernel_inception_distance(real, fake, seed=4)


# -- sampling for evaluation ----------------------------------------------------------------


def test_latents_and_labels_are_seeded_and_follow_the_label_distribution():
    latents, labels = sample_latents_and_labels(2000, 8, num_classes=3, label_probabilities=[0.0, 0.25, 0.75], seed=5)
    again, labels_again = sample_latents_and_labels(2000, 8, num_classes=3, label_probabilities=[0.0, 0.25, 0.75],
                                                    seed=5)
    assert torch.equal(latents, again) and torch.equal(labels, labels_again)
    assert latents.shape == (2000, 8) and labels.dtype == torch.int64
    counts = torch.bincount(labels, minlength=3)
    assert counts[0] == 0 and 0.2 < counts[1] / 2000 < 0.3
    _, uniform = sample_latents_and_labels(3000, 8, num_classes=3, seed=5)
    assert set(uniform.tolist()) == {0, 1, 2}
    assert sample_latents_and_labels(4, 8)[1] is None
    with pytest.raises(ValueError, match="label_probabilities"):
        sample_latents_and_labels(4, 8, num_classes=2, label_probabilities=[1.0, 0.0, 0.0])


# -- real-statistics cache ------------------------------------------------------------------


def make_key(**changes) -> RealStatsKey:
    fields = dict(dataset_hash="sha256-of-prepared-set-a", resolution_px=64, rows="originals",
                  weights_sha256="7ff4a85c", protocol="test-protocol", num_images=40)
    fields.update(changes)
    return RealStatsKey(**fields)


class CountingFeatures:
    """compute_features that counts its calls and returns fixed synthetic features."""

    def __init__(self, num_rows: int = 40, dim: int = 16, seed: int = 0):
        self.calls = 0
        self.features = np.random.default_rng(seed).normal(size=(num_rows, dim)).astype(np.float32)

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.features


def test_cache_is_hit_on_the_second_call_and_keyed_by_data_and_resolution(tmp_path):
    root = default_cache_root(location(str(tmp_path / "prepared")))
    compute = CountingFeatures()
    first = real_statistics(root, make_key(), compute)
    second = real_statistics(root, make_key(), compute)
    assert compute.calls == 1
    np.testing.assert_array_equal(first.mu, second.mu)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    np.testing.assert_array_equal(second.kid_features, compute.features)
    mu, sigma = feature_statistics(compute.features)
    np.testing.assert_allclose(second.mu, mu)
    np.testing.assert_allclose(second.sigma, sigma)
    assert second.num_images == 40

    digest = make_key().digest()
    assert (tmp_path / "prepared" / "fid-stats" / f"{digest}.npz").is_file()
    written_key = json.loads((tmp_path / "prepared" / "fid-stats" / f"{digest}.json").read_text())["key"]
    assert written_key["rows"] == "originals"

    real_statistics(root, make_key(dataset_hash="sha256-of-prepared-set-b"), compute)
    assert compute.calls == 2
    real_statistics(root, make_key(resolution_px=128), compute)
    assert compute.calls == 3
    real_statistics(root, make_key(), compute)
    assert compute.calls == 3


@pytest.mark.parametrize("change", [dict(rows="all"), dict(weights_sha256="0000"), dict(protocol="other"),
                                    dict(num_images=39)])
def test_every_key_field_changes_the_cache_name(change):
    assert make_key(**change).digest() != make_key().digest()


def test_cache_rejects_features_that_do_not_match_the_key(tmp_path):
    with pytest.raises(ValueError, match="expected 40 real feature rows"):
        real_statistics(location(str(tmp_path)), make_key(), CountingFeatures(num_rows=39))


def test_a_damaged_cache_object_is_recomputed_and_replaced(tmp_path, caplog):
    root = location(str(tmp_path))
    compute = CountingFeatures()
    real_statistics(root, make_key(), compute)
    target = tmp_path / f"{make_key().digest()}.npz"
    target.write_bytes(target.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="pokegan_ray.metrics.cache"):
        repaired = real_statistics(root, make_key(), compute)
    assert compute.calls == 2 and "unreadable" in caplog.text
    real_statistics(root, make_key(), compute)
    assert compute.calls == 2
    np.testing.assert_array_equal(repaired.kid_features, compute.features)


def test_kid_features_are_capped_by_a_seeded_subsample(tmp_path):
    compute = CountingFeatures(num_rows=KID_FEATURES_MAX + 7, dim=4)
    key = make_key(num_images=KID_FEATURES_MAX + 7)
    statistics = real_statistics(location(str(tmp_path)), key, compute)
    assert statistics.kid_features.shape == (KID_FEATURES_MAX, 4)
    np.testing.assert_allclose(statistics.mu, compute.features.astype(np.float64).mean(axis=0))  # FID uses every row
    assert real_statistics(location(str(tmp_path)), key, compute).kid_features.shape == (KID_FEATURES_MAX, 4)


def test_cache_works_on_s3(s3_bucket):
    root = default_cache_root(location(f"s3://{s3_bucket}/prepared/pokemon-64"))
    compute = CountingFeatures()
    first = real_statistics(root, make_key(), compute)
    second = real_statistics(root, make_key(), compute)
    assert compute.calls == 1
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert root.join(f"{make_key().digest()}.json").exists()
