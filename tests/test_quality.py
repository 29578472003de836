"""Generator quality metrics: the values torch-fidelity's functions give agree with independent computations,
and prompt_quality scores a perfect and a deterministic generator as it should."""

import numpy as np
import pytest
import scipy.linalg
import torch

from promptgen.toolkit.quality import domain_gap, fid, kid, precision_recall, prompt_quality
from promptgen.values import FeatureSet, PromptLabel


def _clouds(n=300, d=6, shift=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 1.3 + shift


def test_fid_is_the_frechet_distance_of_the_two_gaussians():
    a, b = _clouds()
    x, y = a.double().numpy(), b.double().numpy()
    covmean = scipy.linalg.sqrtm(np.cov(x, rowvar=False) @ np.cov(y, rowvar=False)).real
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(np.cov(x, rowvar=False) + np.cov(y, rowvar=False)
                                                               - 2 * covmean)
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)


def test_kid_is_the_unbiased_mmd_with_the_cubic_polynomial_kernel():
    a, b = _clouds(n=200)
    x, y = a.double().numpy(), b.double().numpy()
    kernel = lambda p, q: (p @ q.T / x.shape[1] + 1) ** 3  # noqa: E731 - KID's kernel
    n = len(x)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    expected = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                - 2 * kxy.mean())
    # subsets of the full size are permutations of the sets, so every subset gives the full-set value
    assert kid(a, b, subsets=3) == pytest.approx(expected, rel=1e-6)


def test_precision_and_recall_follow_the_k_nearest_neighbour_balls():
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(100, 3, generator=g)
    inside, outside = reference[:40] + 0.01, torch.full((60, 3), 50.0)
    precision, recall = precision_recall(torch.cat([inside, outside]), reference)
    assert precision == pytest.approx(0.4) and 0 < recall < 1
    assert precision_recall(reference, reference) == (1.0, 1.0)
    assert precision_recall(outside + torch.randn(60, 3, generator=g), reference) == (0.0, 0.0)


def test_prompt_quality_of_a_perfect_and_of_a_deterministic_generator(tiny_backbone):
    torch.manual_seed(0)  # this draw once put rounding twins among the reference points (recall 0.89)
    labels = [PromptLabel(ctx=0.1 * torch.randn(2, tiny_backbone.ctx_dim), fingerprint=tiny_backbone.fingerprint,
                          domain=str(d), class_names=["a", "b", "c"]) for d in range(3)]
    domain_ids = torch.arange(60) % 3
    features = FeatureSet(torch.nn.functional.normalize(torch.randn(60, tiny_backbone.embed_dim), dim=1),
                          torch.arange(60) // 3 % 3, domain_ids)  # every (domain, class) pair occurs

    class Perfect:  # returns each image's own domain prompt label: no noise, no error
        def sample(self, x):
            index = torch.cdist(x, features.features).argmin(dim=1)
            return torch.stack([labels[d].ctx for d in domain_ids[index]])

    quality = prompt_quality(tiny_backbone, Perfect(), labels, features, draws=4, diversity_images=10)
    # KID is unbiased: for two copies of one set its estimate sits just below 0; the reported value is clamped
    assert quality["fid"] == pytest.approx(0.0, abs=1e-4) and 0 <= quality["kid"] < 1e-2
    assert quality["fid"] == max(0.0, quality["fid_raw"]) and quality["kid"] == max(0.0, quality["kid_raw"])
    assert quality["precision"] == 1.0 and quality["recall"] == 1.0
    assert quality["diversity"] == 0.0 and quality["images"] == 60


def test_domain_gap_is_zero_for_a_domain_with_itself_and_grows_with_the_shift():
    a, b = _clouds(shift=0.0)
    _, c = _clouds(shift=2.0)
    gaps = domain_gap({"a": a, "b": b, "c": c})
    assert set(gaps) == {"a|b", "a|c", "b|c"}
    assert gaps["a|c"]["fid"] > gaps["a|b"]["fid"] and gaps["a|c"]["kid"] > gaps["a|b"]["kid"]


def test_diversity_stays_bounded_when_the_domain_labels_nearly_coincide(tiny_backbone):
    """The old definition divided by the distance between domain labels: 25,959 for two near-copies. Relative to
    the prompts' own norm it lies in [0, 2] whatever the labels are."""
    base = 0.1 * torch.randn(2, tiny_backbone.ctx_dim)
    labels = [PromptLabel(ctx=base + 1e-6 * d, fingerprint=tiny_backbone.fingerprint, domain=str(d),
                          class_names=["a", "b", "c"]) for d in range(2)]
    features = FeatureSet(torch.nn.functional.normalize(torch.randn(30, tiny_backbone.embed_dim), dim=1),
                          torch.arange(30) % 3, torch.arange(30) % 2)

    class Noisy:  # the label plus noise as large as the label itself
        def sample(self, x):
            return base + 0.1 * torch.randn(len(x), *base.shape)

    quality = prompt_quality(tiny_backbone, Noisy(), labels, features, draws=4, diversity_images=10)
    assert 0.5 < quality["diversity"] <= 2.0
    for pair in domain_gap({"a": features.features[:15], "b": features.features[15:]}).values():
        assert pair["fid"] >= 0 and pair["kid"] >= 0 and {"fid_raw", "kid_raw"} <= set(pair)
