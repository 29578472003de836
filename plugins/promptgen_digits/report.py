"""What makes the digits world's datasets benchmarks: zero-shot, templates, probes, domain separability.

Also the preview grid (rows = domains, columns = classes) a person looks at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptgen.storage.cache import FeatureCache
from promptgen.toolkit import extract_features, FeatureSet, prompt_accuracy
from promptgen_digits import world
from promptgen_zeroshot.method import ZeroShotPrompt

ZERO_SHOT_PHRASE = "a photo of a"  # with the class word and '.': "a photo of a seven."
SUBSET_STRIDE = 8  # the card's fixed subset: every 8th test sample of each domain
# One hand-written template per pretraining style (the second edition's named captions) beside the
# evaluation prompt: a style's own template beating the generic prompt on its domain is the room a
# learned domain prompt has.
TEMPLATES = {"generic": world.EVALUATION_PROMPT,
             **{style: next(c for c in captions if "{word}" in c and "{font}" not in c)
                for style, captions in world.NAMED_CAPTIONS.items()}}


def domain_features(backbone, dataset, split: str, *, stride: int = 1, progress=False) -> dict[str, FeatureSet]:
    return {
        domain: extract_features(
            backbone, dataset, dataset.samples(domain, split)[::stride], progress=progress, desc=f"{domain} {split}"
        )
        for domain in dataset.domains
    }


def cached_features(backbone, dataset, name: str, split: str, cache_dir=None, progress=False) -> dict[str, FeatureSet]:
    """Each domain's ``split`` features through the feature cache (computed once per image tower)."""
    with FeatureCache(cache_dir) as cache:
        return {domain: cache.get(backbone, dataset, name, dataset.samples(domain, split), progress=progress)
                for domain in dataset.domains}


def pixel_features(dataset, split: str) -> dict[str, FeatureSet]:
    """Raw pixels (flattened, in [0, 1]) as features: the shift before any backbone."""
    parts = {}
    for domain in dataset.domains:
        arrays = dataset.images(domain)
        chosen = arrays["split"] == ["train", "val", "test"].index(split)
        pixels = torch.from_numpy(arrays["image"][chosen].reshape(int(chosen.sum()), -1)).float() / 255.0
        labels = torch.from_numpy(arrays["label"][chosen])
        parts[domain] = FeatureSet(pixels, labels, torch.zeros_like(labels))
    return parts


def zero_shot(backbone, dataset, features: dict[str, FeatureSet]) -> dict[str, float]:
    learner = ZeroShotPrompt(ZeroShotPrompt.Options(ctx_init=ZERO_SHOT_PHRASE))
    prompt = learner.fit(backbone, dataset.classes, None, None, "any")
    return {domain: prompt_accuracy(backbone, prompt, feats) for domain, feats in features.items()}


@torch.no_grad()
def template_accuracy(backbone, template: str, features: dict[str, FeatureSet]) -> dict[str, float]:
    """Zero-shot accuracy per domain of a whole-sentence template ({word}, {num}) over the ten digits."""
    texts = [template.format(word=word, num=digit) for digit, word in enumerate(world.CLASSES)]
    tokens = backbone.tokenize(texts)
    text = backbone.encode_prompts(backbone.embed_tokens(tokens.ids), tokens.eot_index).float().cpu()
    return {domain: float(((feats.features @ text.T).argmax(1) == feats.labels).float().mean())
            for domain, feats in features.items()}


def _probe(train: FeatureSet, targets_train, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(train.features.numpy(), targets_train)


def _accuracy(probe, feats: FeatureSet) -> float:
    return float((probe.predict(feats.features.numpy()) == feats.labels.numpy()).mean())


def linear_probe_matrix(train: dict[str, FeatureSet], test: dict[str, FeatureSet]) -> dict[str, dict[str, float]]:
    """Accuracy of a logistic-regression probe trained on one domain's train split, on each domain's test split."""
    matrix = {}
    for source, source_features in train.items():
        probe = _probe(source_features, source_features.labels.numpy())
        matrix[source] = {target: _accuracy(probe, feats) for target, feats in test.items()}
    return matrix


def leave_one_out_probe(train: dict[str, FeatureSet], test: dict[str, FeatureSet]) -> dict[str, float]:
    """Per held-out domain: a probe trained on every other domain's train split, tested on its test split
    (what a method that learns from the sources could reach with a linear head)."""
    scores = {}
    for target in test:
        sources = [feats for domain, feats in train.items() if domain != target]
        stacked = FeatureSet(torch.cat([f.features for f in sources]), torch.cat([f.labels for f in sources]),
                             torch.cat([f.domain_ids for f in sources]))
        scores[target] = _accuracy(_probe(stacked, stacked.labels.numpy()), test[target])
    return scores


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


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _row(name: str, values: dict[str, float], domains: list[str]) -> str:
    return (f"| {name} | " + " | ".join(_pct(values[d]) for d in domains)
            + f" | {_pct(float(np.mean([values[d] for d in domains])))} |")


def _probe_table(title: str, matrix: dict, domains: list[str]) -> list[str]:
    lines = ["", title, "", "| trained on \\ tested on | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    return lines + [f"| {source} | " + " | ".join(_pct(row[d]) for d in domains) + " |"
                    for source, row in matrix.items()]


def markdown(report: dict) -> str:
    """One section per dataset: zero-shot and probes per domain, templates, probe matrices, domain classifier."""
    lines = []
    for name, part in report["datasets"].items():
        domains = list(part["zero_shot"])
        lines += [f"## {name}", "", f"Accuracy (%) on the test splits (chance 10%); zero-shot prompt "
                  f"\"{ZERO_SHOT_PHRASE} {{digit}}.\"; probes: logistic regression on frozen image features", "",
                  "| | " + " | ".join(domains) + " | avg |", "|---|" + "---:|" * (len(domains) + 1),
                  _row("zero-shot", part["zero_shot"], domains),
                  _row("in-domain probe", part["in_domain_probe"], domains),
                  _row("cross-domain probe (other domains' train)", part["cross_domain_probe"], domains)]
        lines += ["", "Zero-shot with one hand-written template per pretraining style (%)", "",
                  "| template | " + " | ".join(domains) + " | avg |", "|---|" + "---:|" * (len(domains) + 1)]
        lines += [_row(f'"{TEMPLATES[key]}"', values, domains) for key, values in part["templates"].items()]
        lines += _probe_table("Linear probe (%): rows = trained on (train split), columns = tested on (test split)",
                              part["linear_probe"], domains)
        if "pixel_probe" in part:
            lines += _probe_table("The same probe on raw pixels (%): the shift before any backbone",
                                  part["pixel_probe"], domains)
        lines += ["", f"Domain classifier on image features: {_pct(part['domain_classifier'])}% "
                      f"(chance {100 / len(domains):.0f}%)", ""]
    return "\n".join(lines)


def dataset_report(backbone, dataset, name: str, *, cache_dir=None, progress: bool = True, pixels: bool = True) -> dict:
    train = cached_features(backbone, dataset, name, "train", cache_dir, progress)
    test = cached_features(backbone, dataset, name, "test", cache_dir, progress)
    matrix = linear_probe_matrix(train, test)
    part = {
        "zero_shot": zero_shot(backbone, dataset, test),
        "templates": {key: template_accuracy(backbone, template, test) for key, template in TEMPLATES.items()},
        "in_domain_probe": {domain: matrix[domain][domain] for domain in dataset.domains},
        "cross_domain_probe": leave_one_out_probe(train, test),
        "linear_probe": matrix,
        "domain_classifier": domain_classifier_accuracy(train, test),
    }
    if pixels:
        part["pixel_probe"] = linear_probe_matrix(pixel_features(dataset, "train"), pixel_features(dataset, "test"))
    return part


def build_report(backbone, datasets: dict, *, cache_dir=None, progress: bool = True) -> dict:
    """``datasets``: name -> dataset. The whole report: the backbone and one part per dataset."""
    return {"fingerprint": backbone.fingerprint,
            "datasets": {name: dataset_report(backbone, dataset, name, cache_dir=cache_dir, progress=progress)
                         for name, dataset in datasets.items()}}


def preview(dataset, path: Path, per_cell: int = 3, scale: int = 3) -> Path:
    """A PNG grid: one row per domain, one column per class, ``per_cell`` test images side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(dataset.domains), len(dataset.classes)
    size = dataset.options.image_size
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
