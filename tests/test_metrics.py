import numpy as np
import pytest
from scipy import linalg

from ldm.metrics import feature_statistics, frechet_distance


def scipy_reference(mu1, s1, mu2, s2):
    """The pytorch-fid formula with scipy's general sqrtm, as an independent check."""
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_diagonal_gaussians_match_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_full_covariances_match_scipy_and_are_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(64, 32)), rng.normal(size=(64, 32))
    s1, s2 = a.T @ a / 64, b.T @ b / 64
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert d == pytest.approx(scipy_reference(mu1, s1, mu2, s2), rel=1e-7)
    assert d == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_distance_of_a_set_to_itself_is_zero_and_grows_with_a_shift():
    features = np.random.default_rng(2).normal(size=(5000, 128))
    mu, sigma = feature_statistics(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    mu2, sigma2 = feature_statistics(features + 0.5)
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(128 * 0.25, rel=1e-6)


def test_singular_covariances_stay_finite():
    features = np.random.default_rng(3).normal(size=(50, 128))  # N < D: rank-deficient covariance
    mu, sigma = feature_statistics(features)
    mu2, sigma2 = feature_statistics(features[:, ::-1].copy())
    d = frechet_distance(mu, sigma, mu2, sigma2)
    assert np.isfinite(d) and d >= -1e-6


def test_feature_statistics_are_per_feature_not_per_sample():
    features = np.random.default_rng(4).normal(size=(1000, 8)) * np.arange(1, 9)
    mu, sigma = feature_statistics(features)
    assert mu.shape == (8,) and sigma.shape == (8, 8) and sigma.dtype == np.float64
    np.testing.assert_allclose(np.sqrt(np.diag(sigma)), np.arange(1, 9), rtol=0.1)
