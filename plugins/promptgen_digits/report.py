"""What makes digits-dg a benchmark: zero-shot accuracy, cross-domain linear probes, domain separability.

Also the preview grid (rows = domains, columns = classes) a person looks at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptgen.data import extract_features
from promptgen.evaluate import prompt_accuracy
from promptgen.values import FeatureSet
from promptgen_digits.dataset import DigitsDG
from promptgen_zeroshot.method import ZeroShotPrompt

ZERO_SHOT_PHRASE = "a photo of a"  # with the class word and '.': "a photo of a seven."
SUBSET_STRIDE = 8  # the card's fixed subset: every 8th test sample of each domain


def domain_features(backbone, dataset: DigitsDG, split: str, *, stride: int = 1, progress=False) -> dict[str, FeatureSet]:
    return {
        domain: extract_features(
            backbone, dataset, dataset.samples(domain, split)[::stride], progress=progress, desc=f"{domain} {split}"
        )
        for domain in dataset.domains
    }


def pixel_features(dataset: DigitsDG, split: str) -> dict[str, FeatureSet]:
    """Raw pixels (flattened, in [0, 1]) as features: the shift before any backbone."""
    parts = {}
    for domain in dataset.domains:
        arrays = dataset.images(domain)
        chosen = arrays["split"] == ["train", "val", "test"].index(split)
        pixels = torch.from_numpy(arrays["image"][chosen].reshape(int(chosen.sum()), -1)).float() / 255.0
        labels = torch.from_numpy(arrays["label"][chosen])
        parts[domain] = FeatureSet(pixels, labels, torch.zeros_like(labels))
    return parts


def zero_shot(backbone, dataset: DigitsDG, features: dict[str, FeatureSet]) -> dict[str, float]:
    prompt = ZeroShotPrompt(ZERO_SHOT_PHRASE).fit(backbone, dataset.classes, None, None, "any")
    return {domain: prompt_accuracy(backbone, prompt, feats) for domain, feats in features.items()}


def _probe(train: FeatureSet, targets_train, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(train.features.numpy(), targets_train)


def linear_probe_matrix(train: dict[str, FeatureSet], test: dict[str, FeatureSet]) -> dict[str, dict[str, float]]:
    """Accuracy of a logistic-regression probe trained on one domain's train split, on each domain's test split."""
    matrix = {}
    for source, source_features in train.items():
        probe = _probe(source_features, source_features.labels.numpy())
        matrix[source] = {
            target: float((probe.predict(feats.features.numpy()) == feats.labels.numpy()).mean())
            for target, feats in test.items()
        }
    return matrix


def domain_classifier_accuracy(train: dict[str, FeatureSet], test: dict[str, FeatureSet]) -> float:
    """How well image features tell the domains apart (chance = 1 / number of domains)."""
    def stack(parts):
        features = torch.cat([f.features for f in parts.values()]).numpy()
        domains = np.concatenate([np.full(len(f), i) for i, f in enumerate(parts.values())])
        return features, domains

    x_train, d_train = stack(train)
    x_test, d_test = stack(test)
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000).fit(x_train, d_train)
    return float((classifier.predict(x_test) == d_test).mean())


def _probe_table(title: str, matrix: dict, domains: list[str]) -> list[str]:
    lines = ["", title, "", "| trained on \\ tested on | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    return lines + [f"| {source} | " + " | ".join(f"{100 * row[d]:.1f}" for d in domains) + " |"
                    for source, row in matrix.items()]


def markdown(report: dict) -> str:
    domains = list(report["zero_shot"])
    lines = [
        f"Zero-shot accuracy (%), prompt \"{ZERO_SHOT_PHRASE} {{digit}}.\", test splits (chance 10%)",
        "",
        "| " + " | ".join(domains) + " | avg |",
        "|" + "---:|" * (len(domains) + 1),
        "| " + " | ".join(f"{100 * report['zero_shot'][d]:.1f}" for d in domains)
        + f" | {100 * np.mean(list(report['zero_shot'].values())):.1f} |",
    ]
    lines += _probe_table("Linear probe on frozen image features (%): rows = trained on (train split), "
                          "columns = tested on (test split)", report["linear_probe"], domains)
    lines += _probe_table("The same probe on raw pixels (%): the shift before any backbone", report["pixel_probe"],
                          domains)
    lines += ["", f"Domain classifier on image features: {100 * report['domain_classifier']:.1f}% "
                  f"(chance {100 / len(domains):.0f}%)"]
    return "\n".join(lines)


def build_report(backbone, dataset: DigitsDG, progress: bool = True) -> dict:
    train = domain_features(backbone, dataset, "train", progress=progress)
    test = domain_features(backbone, dataset, "test", progress=progress)
    return {
        "fingerprint": backbone.fingerprint,
        "zero_shot": zero_shot(backbone, dataset, test),
        "linear_probe": linear_probe_matrix(train, test),
        "pixel_probe": linear_probe_matrix(pixel_features(dataset, "train"), pixel_features(dataset, "test")),
        "domain_classifier": domain_classifier_accuracy(train, test),
    }


def preview(dataset: DigitsDG, path: Path, per_cell: int = 3, scale: int = 3) -> Path:
    """A PNG grid: one row per domain, one column per class, ``per_cell`` test images side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(dataset.domains), len(dataset.classes)
    size = dataset.image_size
    figure, axes = plt.subplots(rows, cols, figsize=(cols * per_cell * size * scale / 100, rows * size * scale / 90))
    for r, domain in enumerate(dataset.domains):
        arrays = dataset.images(domain)
        for c, name in enumerate(dataset.classes):
            picks = np.flatnonzero((arrays["label"] == c) & (arrays["split"] == 2))[:per_cell]
            axes[r, c].imshow(np.concatenate(list(arrays["image"][picks]), axis=1), interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name)
            if c == 0:
                axes[r, c].set_ylabel(domain)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
