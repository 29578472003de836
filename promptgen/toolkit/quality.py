"""Generator quality and domain gaps, with torch-fidelity's metric functions applied to feature tensors.

Prompts are compared where they act: each image's prompt is encoded around the image's own class
name, giving one text feature per image. The reference for an image is its source domain's prompt
label, the generated one is the generator's prompt for it:

  FID, KID     distance between the generated and reference text-feature distributions (lower: closer)
  precision    share of generated features inside the reference manifold (k-NN balls, k = 3)
  recall       share of reference features inside the generated manifold
  diversity    mean pairwise L2 distance between prompts drawn for the same image under different
               noise, relative to the mean norm of those prompts: in [0, 2] (0: deterministic), so it
               cannot explode when the domains' prompt labels are close to one another

FID and KID are distances, but estimated: FID's matrix square root and KID's unbiased estimate
can come out slightly below 0 for two sets that match. The reported values are clamped at 0; the
estimates themselves are kept as ``fid_raw`` and ``kid_raw``.

The reference set holds few distinct points (domains x classes), so precision and recall use its
distinct points only: duplicates would give k-NN balls of radius zero.

domain_gap: FID and KID between the image features of every pair of domains.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from promptgen.toolkit.evaluate import generated_prompts
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.values import FeatureSet, PromptLabel

NEIGHBORHOOD = 3
BATCH = 1024


def fid(generated: torch.Tensor, reference: torch.Tensor) -> float:
    stats = [fid_features_to_statistics(x.detach().double().cpu()) for x in (generated, reference)]
    return float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])


def kid(generated: torch.Tensor, reference: torch.Tensor, subsets: int = 100, seed: int = 0) -> float:
    size = min(1000, len(generated), len(reference))
    return float(kid_features_to_metric(generated.detach().double().cpu(), reference.detach().double().cpu(),
                                        kid_subsets=subsets, kid_subset_size=size, rng_seed=seed,
                                        verbose=False)[KEY_METRIC_KID_MEAN])


def _prc(generated: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    result = prc_features_to_metric(generated.detach().float().cpu(), reference.detach().float().cpu(),
                                    prc_neighborhood=NEIGHBORHOOD, prc_batch_size=10000, save_cpu_ram=False,
                                    verbose=False)
    return float(result[KEY_METRIC_PRECISION]), float(result[KEY_METRIC_RECALL])


def distinct_points(x: torch.Tensor, decimals: int = 5) -> torch.Tensor:
    """The rows of ``x`` that differ beyond ``decimals``: copies of one point give a k-NN ball of radius
    0, which the same point encoded in another batch (rounding at 1e-7) falls outside."""
    return torch.unique(torch.round(x.detach().float().cpu(), decimals=decimals), dim=0)


def precision_recall(generated: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al.) with k = NEIGHBORHOOD.

    Precision counts every generated point (a generator that repeats a bad prompt pays for each
    repeat); the balls are built on distinct points only (``distinct_points``), so exact copies cannot
    shrink a ball to nothing. NaN when either set has no more than NEIGHBORHOOD distinct points.
    """
    distinct_reference, distinct_generated = distinct_points(reference), distinct_points(generated)
    if min(len(distinct_reference), len(distinct_generated)) <= NEIGHBORHOOD:
        return float("nan"), float("nan")
    precision, _ = _prc(generated, distinct_reference)
    _, recall = _prc(distinct_generated, distinct_reference)
    return precision, recall


@torch.no_grad()
def _text_features(backbone, assembler: PromptAssembler, prompts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = []
    for start in range(0, len(prompts), BATCH):
        embeddings, eot = assembler.assemble_pairs(prompts[start:start + BATCH], labels[start:start + BATCH])
        out.append(backbone.encode_prompts(embeddings, eot).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def prompt_quality(backbone, generator, prompt_labels: Sequence[PromptLabel], features: FeatureSet, *,
                   draws: int = 8, diversity_images: int = 128, name: str = "") -> dict:
    """Fidelity and diversity of ``generator``'s prompts on ``features`` (domain_ids index ``prompt_labels``)."""
    labels = torch.stack([label.ctx for label in prompt_labels]).float()  # [K, n_ctx, D]
    assembler = PromptAssembler(backbone, prompt_labels[0].class_names, labels.shape[1])
    n_ctx, ctx_dim = labels.shape[1:]

    def sample(images):
        return generated_prompts(generator, images, n_ctx, ctx_dim, name).float().cpu()

    prompts = sample(features.features)
    generated = _text_features(backbone, assembler, prompts, features.labels)
    reference = _text_features(backbone, assembler, labels[features.domain_ids], features.labels)
    distinct = distinct_points(reference)
    precision, recall = precision_recall(generated, reference)

    images = features.features[:diversity_images]
    draws_per_image = sample(images.repeat_interleave(draws, dim=0))
    draws_per_image = draws_per_image.reshape(len(images), draws, -1)
    pairs = torch.cdist(draws_per_image, draws_per_image)  # [M, draws, draws]
    spread = pairs.sum(dim=(1, 2)) / (draws * (draws - 1))
    norm = draws_per_image.norm(dim=-1).mean()
    return {
        **distances(generated, reference),
        "precision": precision,
        "recall": recall,
        "diversity": float(spread.mean() / norm) if norm > 0 else 0.0,
        "images": len(features),
        "reference_points": len(distinct),
    }


def distances(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """FID and KID between two feature sets, clamped at 0 (both are distances), with the raw estimates."""
    raw = {"fid_raw": fid(a, b), "kid_raw": kid(a, b)}
    return {"fid": max(0.0, raw["fid_raw"]), "kid": max(0.0, raw["kid_raw"]), **raw}


def domain_gap(features: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """{"a|b": {"fid", "kid"}} for every pair of domains' image features [N_d, E]."""
    return {f"{a}|{b}": distances(features[a], features[b]) for a, b in itertools.combinations(features, 2)}
