"""Zero-shot evaluation on every domain of a dataset: the quick end-to-end job until the SPG suites exist."""

from __future__ import annotations

from promptgen.data import extract_features
from promptgen.evaluate import prompt_accuracy
from promptgen.registry import create


def run(backbone, dataset_name: str, *, split: str = "test", batch_size: int = 64, progress: bool = True) -> dict:
    """Accuracy of the hand-written prompt "a photo of a <class>." on each domain's ``split``."""
    dataset = create("dataset", dataset_name)
    learner = create("prompt_learner", "zeroshot")
    accuracy = {}
    for domain in dataset.domains:
        samples = dataset.samples(domain, split)
        features = extract_features(backbone, dataset, samples, batch_size=batch_size, progress=progress, desc=domain)
        prompt = learner.fit(backbone, dataset.classes, features, None, domain)
        accuracy[domain] = prompt_accuracy(backbone, prompt, features)
    return {
        "dataset": dataset_name,
        "split": split,
        "method": "zeroshot",
        "fingerprint": backbone.fingerprint,
        "chance": 1 / len(dataset.classes),
        "accuracy": accuracy,
        "average": sum(accuracy.values()) / len(accuracy),
    }


def table(record: dict) -> str:
    domains = list(record["accuracy"])
    lines = [
        f"Zero-shot accuracy (%) on {record['dataset']} ({record['split']} split), backbone {record['fingerprint']}",
        "",
        "| method | " + " | ".join(domains) + " | avg |",
        "|---|" + "---:|" * (len(domains) + 1),
        f"| {record['method']} | " + " | ".join(f"{100 * record['accuracy'][d]:.1f}" for d in domains)
        + f" | {100 * record['average']:.1f} |",
        "",
        f"chance: {100 * record['chance']:.1f}%",
    ]
    return "\n".join(lines)
