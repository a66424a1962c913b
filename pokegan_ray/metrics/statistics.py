"""FID and KID from Inception features, in float64.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the two
feature sets; it is computed as pytorch-fid and clean-fid do, so numbers are comparable.
KID (Bińkowski et al. 2018) is the unbiased MMD² with the cubic polynomial kernel,
averaged over random subsets as torch-fidelity and clean-fid do. FID∞ (Chong & Forsyth 2020)
is FID with the bias of a finite sample removed: FID over N images is close to FID∞ + k/N, so a
line fitted to FIDs of subsets of several sizes, against 1/N, is read at 1/N = 0.
"""

from __future__ import annotations

import numpy as np

KID_SUBSET_SIZE_MAX = 1000
# FID∞: subset sizes from half the sample to all of it, and random subsets per size (averaged).
FID_INFINITY_SIZES = 8
FID_INFINITY_DRAWS = 4
# Above this many images one subset per size is enough (and each FID costs ~count² x 2048 flops).
FID_INFINITY_MANY = 512
KID_NUM_SUBSETS = 100
# Above this many kernel entries (float64: 8 bytes each) KID computes each subset's kernels
# instead of one kernel matrix over all rows: 40M entries = 320 MB.
_KERNEL_ENTRIES_MAX = 40_000_000


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D), unbiased (N - 1), in float64, of (N, D) features."""
    features = _as_feature_matrix(features, "features")
    if features.shape[0] < 2:
        raise ValueError(f"statistics need at least 2 feature rows, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½).

    Tr((Σ1 Σ2)^½) is the sum of the square roots of the eigenvalues of Σ1 Σ2, which are those
    of the symmetric positive semi-definite √Σ1 Σ2 √Σ1; two symmetric eigendecompositions
    give it exactly, ~1.4 s for 2048x2048 on 2 cores, where pytorch-fid's general sqrtm takes
    ~10 s. This is also the stable form: singular covariances (fewer samples than
    dimensions) need no eps offset, and the tiny negative eigenvalues rounding leaves (the
    source of the small imaginary parts pytorch-fid discards) are clipped to 0. A covariance
    that is clearly not positive semi-definite raises ValueError. Agrees with scipy's sqrtm
    to ~1e-7 relative (tests/test_metrics.py).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu1.shape != mu2.shape or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")

    difference = mu1 - mu2
    root1 = _psd_sqrt(sigma1, "sigma1")
    _psd_sqrt(sigma2, "sigma2")  # only the check
    product = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def frechet_distance_to_sample(mu1: np.ndarray, sigma1_root: np.ndarray, features: np.ndarray) -> float:
    """`frechet_distance` between (mu1, Σ1), given by Σ1's symmetric square root, and the Gaussian fitted
    to the (n, D) `features`, without forming the sample's D x D covariance.

    With X the centred features and M = X √Σ1, the eigenvalues of √Σ1 Σ2 √Σ1 = MᵀM / (n − 1) other
    than zero are those of M Mᵀ / (n − 1), an n x n matrix: for the tens to hundreds of images of a
    training-time evaluation one FID costs milliseconds, not the ~1.4 s of two 2048 x 2048
    eigendecompositions, which is what makes FID∞'s many subsets affordable.
    """
    features = _as_feature_matrix(features, "features")
    count = features.shape[0]
    if count < 2:
        raise ValueError(f"statistics need at least 2 feature rows, got {count}")
    mean = features.mean(axis=0)
    centred = features - mean
    centred_root = centred @ sigma1_root
    small = centred_root @ centred_root.T if count <= features.shape[1] else centred_root.T @ centred_root
    eigenvalues = np.linalg.eigvalsh(small / (count - 1))
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    difference = np.asarray(mu1, np.float64) - mean
    trace_sample = float((centred ** 2).sum()) / (count - 1)
    trace_reference = float((sigma1_root ** 2).sum())  # Tr(√Σ1 √Σ1), √Σ1 symmetric
    return float(difference @ difference + trace_reference + trace_sample - 2.0 * trace_root)


def covariance_root(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (for `frechet_distance_to_sample`)."""
    return _psd_sqrt(np.atleast_2d(np.asarray(sigma, np.float64)), "sigma")


def fid_infinity(mu1: np.ndarray, sigma1_root: np.ndarray, features: np.ndarray, *, seed: int = 0,
                 sizes: int = FID_INFINITY_SIZES, draws: int = FID_INFINITY_DRAWS) -> float:
    """FID∞ of the sample `features` against (mu1, Σ1): the intercept at 1/N = 0 of a least-squares line
    through the mean FID of `draws` random subsets at each of `sizes` sizes from N/2 to N (Chong &
    Forsyth 2020, who use 50,000 images; with the tens of images a rung affords the extrapolation is
    long, so whether it ranks better than FID itself is for benchmarks/rung_fidelity.py to say).
    """
    features = _as_feature_matrix(features, "features")
    count = features.shape[0]
    smallest = max(count // 2, 2)
    if count < 4 or sizes < 2:
        raise ValueError(f"FID∞ needs at least 4 feature rows and 2 subset sizes, got {count} rows, {sizes} sizes")
    rng = np.random.default_rng(seed)
    subset_sizes = np.unique(np.linspace(smallest, count, sizes).round().astype(int))
    means = []
    for size in subset_sizes:
        repeats = 1 if size == count or count > FID_INFINITY_MANY else draws
        means.append(np.mean([frechet_distance_to_sample(mu1, sigma1_root,
                                                         features[rng.choice(count, size, replace=False)])
                              for _ in range(repeats)]))
    slope, intercept = np.polyfit(1.0 / subset_sizes, np.asarray(means), 1)
    return float(intercept)


def _psd_sqrt(matrix: np.ndarray, name: str) -> np.ndarray:
    """The symmetric square root of a covariance; rounding's tiny negative eigenvalues become 0."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    scale = max(float(np.abs(eigenvalues).max(initial=0.0)), 1e-300)
    if eigenvalues.min(initial=0.0) < -1e-6 * scale:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {eigenvalues.min():.3g}): it is not a "
                         "covariance matrix")
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def kernel_inception_distance(real_features: np.ndarray, fake_features: np.ndarray, *,
                              num_subsets: int = KID_NUM_SUBSETS, subset_size: int | None = None,
                              seed: int = 0) -> tuple[float, float]:
    """(mean, std) over `num_subsets` of the unbiased MMD² with k(x, y) = (x·y / d + 1)³.

    Each subset draws `subset_size` rows without replacement from each side (default
    min(1000, n_real, n_fake), so a ~1000-image data set and a few-hundred-image sample both
    work); the draws come from `seed`, so the same features give the same KID.
    """
    real = _as_feature_matrix(real_features, "real_features")
    fake = _as_feature_matrix(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    largest = min(real.shape[0], fake.shape[0])
    size = min(KID_SUBSET_SIZE_MAX, largest) if subset_size is None else subset_size
    if size < 2 or size > largest:
        raise ValueError(f"KID subset size must be between 2 and min(n_real, n_fake) = {largest}, got {size} "
                         f"(n_real {real.shape[0]}, n_fake {fake.shape[0]})")

    rng = np.random.default_rng(seed)
    subsets = [(rng.choice(real.shape[0], size, replace=False), rng.choice(fake.shape[0], size, replace=False))
               for _ in range(num_subsets)]
    kernel_entries = real.shape[0] ** 2 + fake.shape[0] ** 2 + real.shape[0] * fake.shape[0]
    values = _subset_mmd2(real, fake, subsets, precompute_kernels=kernel_entries <= _KERNEL_ENTRIES_MAX)
    return float(np.mean(values)), float(np.std(values))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _subset_mmd2(real: np.ndarray, fake: np.ndarray, subsets: list[tuple[np.ndarray, np.ndarray]], *,
                 precompute_kernels: bool) -> np.ndarray:
    """Unbiased MMD² per subset. Precomputing the three kernel matrices once makes 100 subsets
    of 1000 rows cost one set of matrix products instead of a hundred."""
    if precompute_kernels:
        real_real, fake_fake = _polynomial_kernel(real, real), _polynomial_kernel(fake, fake)
        real_fake = _polynomial_kernel(real, fake)
    values = []
    for real_rows, fake_rows in subsets:
        if precompute_kernels:
            k_rr = real_real[np.ix_(real_rows, real_rows)]
            k_ff = fake_fake[np.ix_(fake_rows, fake_rows)]
            k_rf = real_fake[np.ix_(real_rows, fake_rows)]
        else:
            x, y = real[real_rows], fake[fake_rows]
            k_rr, k_ff, k_rf = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        m = k_rr.shape[0]
        # Unbiased: a sample's kernel with itself (the diagonals) carries no information about the distribution.
        within = (k_rr.sum() - np.trace(k_rr) + k_ff.sum() - np.trace(k_ff)) / (m * (m - 1))
        values.append(within - 2.0 * k_rf.sum() / (m * m))
    return np.asarray(values)


def _as_feature_matrix(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) matrix, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or infinity")
    return features
