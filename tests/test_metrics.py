import numpy as np
import pytest
import torch
from scipy import linalg

from ldm.classifier import Classifier, ClassifierConfig
from ldm.metrics import (_min_distances, feature_statistics, frechet_distance, manifold_radii,
                         nearest_neighbour_distance, precision_recall)
from ldm.scoring import FEATURE_BATCH, classifier_features


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


def test_singular_covariances_match_the_closed_form():
    """Features that never vary in some directions (rank-deficient covariances, as with fewer
    images than dimensions): for diagonal covariances the distance is still the closed form."""
    rng = np.random.default_rng(3)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    v1[:6], v2[3:9] = 0.0, 0.0  # some directions singular in one set, some in both
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_feature_statistics_are_per_feature_not_per_sample():
    features = np.random.default_rng(4).normal(size=(1000, 8)) * np.arange(1, 9)
    mu, sigma = feature_statistics(features)
    assert mu.shape == (8,) and sigma.shape == (8, 8) and sigma.dtype == np.float64
    np.testing.assert_allclose(np.sqrt(np.diag(sigma)), np.arange(1, 9), rtol=0.1)


# ---- nearest-neighbour metrics, against a brute-force reference and cases with known answers

def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al.'s definitions written out with the full distance matrices."""
    def radii(points):
        d = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    def coverage(points, centres):
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return float((d <= radii(centres)[None]).any(axis=1).mean())

    return coverage(fake, real), coverage(real, fake)


def test_precision_recall_match_the_brute_force_reference_across_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(300, 6)), rng.normal(0.7, 1.2, size=(250, 6))
    expected = brute_force_precision_recall(real, fake, k=3)
    assert precision_recall(real, fake, k=3) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # neither trivially 0 nor 1
    # the real set's radii computed once and passed in (as Scorer does) give the same, and are used
    radii = manifold_radii(real, 3)
    assert precision_recall(real, fake, k=3, real_radii=radii) == pytest.approx(expected, abs=1e-12)
    assert precision_recall(real, fake, k=3, real_radii=np.zeros_like(radii))[0] == 0.0
    # the same with chunks smaller than either set, so that the chunk offsets are exercised
    chunked = lambda queries, reference, k=1, exclude_self=False: _min_distances(queries, reference, k, exclude_self,
                                                                                  chunk=7)
    monkeypatch.setattr("ldm.metrics._min_distances", chunked)
    assert precision_recall(real, fake, k=3) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_of_identical_and_disjoint_sets():
    points = np.random.default_rng(6).normal(size=(200, 4))
    assert precision_recall(points, points.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(points, points + 100.0, k=3) == (0.0, 0.0)


def test_the_nearest_neighbour_distance_against_brute_force_and_a_copied_set():
    rng = np.random.default_rng(7)
    train, samples = rng.normal(size=(500, 5)), rng.normal(size=(120, 5))
    brute = np.linalg.norm(samples[:, None] - train[None], axis=-1).min(axis=1).mean()
    assert nearest_neighbour_distance(samples, train) == pytest.approx(brute, rel=1e-12)
    assert _min_distances(torch.as_tensor(samples), torch.as_tensor(train), chunk=11).mean().item() == \
        pytest.approx(brute, rel=1e-12)
    # samples that copy training images sit at distance 0 (to the rounding of cdist's
    # |a|² + |b|² - 2a·b in float64, ~1e-8 here): the memorisation ratio goes to 0
    assert nearest_neighbour_distance(train[:50], train) < 1e-6
    # excluding each point itself, a set's distance to itself is the brute-force second nearest
    second = np.sort(np.linalg.norm(train[:, None] - train[None], axis=-1), axis=1)[:, 1]
    t = torch.as_tensor(train)
    assert _min_distances(t, t, exclude_self=True, chunk=64).numpy() == pytest.approx(second, rel=1e-12)


def test_classifier_features_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    classifier, images = Classifier(ClassifierConfig()), torch.rand(250, 1, 28, 28)
    cpu = torch.device("cpu")
    default = classifier_features(classifier, images, cpu)
    assert default.shape == (250, ClassifierConfig().feature_dim) and FEATURE_BATCH["cpu"] < 250
    for batch_size in (1000, 64):
        np.testing.assert_allclose(classifier_features(classifier, images, cpu, batch_size=batch_size), default,
                                   rtol=1e-5, atol=1e-6)
