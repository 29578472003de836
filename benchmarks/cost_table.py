"""The cost table of docs/spg.md ("What a run costs"): hours of one SPG run on 2 CPU cores with ViT-B/16, per preset.

From the rates the perf-vitb16 suite measured (below), DomainBed's image counts, each preset's split and steps
per epoch (promptgen.toolkit.epochs): gpu splits as the released code (70/30 per class; DomainNet ceil(2 %) train,
ceil(1 %) val per class, the target's train + val tested: +0.5 image per class for each ceil on average) and
takes floor(images / 32) steps an epoch; cpu splits 80/20, tests the whole target and takes every one of its
4 views an epoch. Run: ``python benchmarks/cost_table.py``; tests/test_docs.py keeps docs/spg.md equal to it.
"""

from __future__ import annotations

RATES = {7: (5.1, 13.0), 65: (1.8, 5.6), 345: (0.55, 1.1)}  # classes -> CoOp steps/s, scored images/s
EXTRACTION, STAGE2 = 2.5, 34.6  # images/s through the pipeline; cached CGAN steps/s
DATASETS = {
    "PACS (9,991 images)": (7, {"art": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}),
    "OfficeHome (15,588)": (65, {"art": 2427, "clipart": 4365, "product": 4439, "real": 4357}),
    "DomainNet (586,575)": (345, {"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500,
                                  "real": 172947, "sketch": 69128}),
}
PRESETS = {  # views cached, rows an epoch visits per image, stage I epochs / batch, stage II epochs / batch
    "gpu": {"views": 8, "per_image": 1, "epochs1": 50, "batch1": 32, "epochs2": 70, "batch2": 32},
    "cpu": {"views": 4, "per_image": 4, "epochs1": 8, "batch1": 32, "epochs2": 12, "batch2": 128},
}


def split(dataset: str, classes: int, images: int, preset: str) -> tuple[float, float, float]:
    """(train, val, test) images of one domain."""
    if preset == "cpu":
        return 0.8 * images, 0.2 * images, images
    if dataset.startswith("DomainNet"):
        train, val = 0.02 * images + 0.5 * classes, 0.01 * images + 0.5 * classes
        return train, val, train + val
    return 0.7 * images, 0.3 * images, images


def steps(images: float, batch: int) -> int:
    return int(images) // batch if images >= batch else 1


def hours(dataset: str, classes: int, domains: dict, preset: str) -> list[float]:
    """extraction, stage I, stage II steps, stage II val scoring, test, one run without extraction (means over
    the held-out domains), and every target with one seed (extraction and stage I once per domain)."""
    p, (coop_rate, score_rate) = PRESETS[preset], RATES[classes]
    parts = {d: split(dataset, classes, n, preset) for d, n in domains.items()}
    stage1 = {d: p["epochs1"] * steps(train * p["per_image"], p["batch1"]) / coop_rate for d, (train, _, _) in
              parts.items()}
    runs = []
    for target in domains:
        sources = [d for d in domains if d != target]
        train, val = sum(parts[d][0] for d in sources), sum(parts[d][1] for d in sources)
        test = parts[target][2]
        extraction = (sum(parts[d][0] * p["views"] + parts[d][1] for d in sources) + test) / EXTRACTION
        stage2 = p["epochs2"] * steps(train * p["per_image"], p["batch2"]) / STAGE2
        scoring = p["epochs2"] * val / score_rate
        runs.append([extraction, sum(stage1[d] for d in sources), stage2, scoring, test / score_rate])
    mean = [sum(run[i] for run in runs) / len(runs) / 3600 for i in range(5)]
    # every target: each domain's train views and val once, and its test images (its train in the eval transform)
    extracted = sum(train * p["views"] + val + train for train, val, _ in parts.values()) / EXTRACTION
    every = (extracted + sum(stage1.values()) + sum(sum(run[2:]) for run in runs)) / 3600
    return [*mean, sum(mean[1:]), every]


def table() -> str:
    def number(value: float) -> str:
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"

    lines = []
    for dataset, (classes, domains) in DATASETS.items():
        for preset in PRESETS:
            h = hours(dataset, classes, domains, preset)
            name = dataset if preset == "gpu" else dataset.split(" (")[0]
            lines.append(f"| {name} | {classes} | {preset} | {number(h[0])} | {number(h[1])} | {number(h[2])} + "
                         f"{number(h[3])} | {number(h[4])} | {number(h[5])} | {number(h[6])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
