"""The run directory: what a run writes, where, and how it is read back.

    config.json    {"run": the RunConfig, "preset": cpu|gpu, "method": name, "components": [[kind, name]...],
                    "options": {"<kind>/<name>": resolved options}}
    <method files> whatever the method's ``save`` writes (prompt labels, generator, ...)
    metrics.json   accuracies, stage seconds, sizes, the method's fit report, generator quality, versions
    history.json   the per-epoch history of the method's fit report, when it has one

Every JSON file is written atomically and strictly (promptgen.files).
"""

from __future__ import annotations

from pathlib import Path

from promptgen.config import RunConfig, from_dict
from promptgen.errors import PromptgenError
from promptgen.files import read_json, write_json

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.json"


def start(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PromptgenError(f"cannot create the run directory {out}: {error.strerror or error}") from None


def write_config(out: Path, config: RunConfig, checked, context) -> None:
    options = {f"{kind}/{name}": context.options(kind, name) for kind, name in checked.components}
    options[f"method/{checked.method_name}"] = context.options("method", checked.method_name)
    write_json(out / CONFIG, {"run": config.to_dict(), "preset": checked.preset, "method": checked.method_name,
                              "components": [list(pair) for pair in checked.components], "options": options})


def metrics(config: RunConfig, checked, context, scores: dict, report: dict, quality, versions: dict) -> dict:
    return {
        "dataset": config.dataset, "target_dataset": config.target_dataset or config.dataset,
        "sources": list(context.sources), "targets": list(context.targets), "classes": len(context.classes),
        "method": config.method, "components": {kind: name for kind, name in checked.components},
        "seed": config.seed, "preset": checked.preset, "fingerprint": context.backbone.fingerprint,
        "test_accuracy": {domain: scores[f"test/{domain}"] for domain in context.targets},
        "val_accuracy": scores["val"],
        "model_selection": "training-domain validation (val split of the source domains)",
        "seconds": dict(context.seconds),
        "sizes": {split: len(context.samples(split)) for split in ("train", *context.eval_splits)},
        "views": context.views,
        "fit": {key: value for key, value in report.items() if key != "history"},
        "generator_quality": quality,
        "versions": versions,
    }


def write_metrics(out: Path, metrics: dict, history) -> None:
    write_json(out / METRICS, metrics)
    if history is not None:
        write_json(out / HISTORY, history)


def load_config(run_dir: Path) -> RunConfig:
    """The RunConfig a run directory was made with."""
    if not (run_dir / CONFIG).is_file():
        raise PromptgenError(f"{run_dir} is not a run directory: {CONFIG} is missing")
    saved = read_json(run_dir / CONFIG, "run config")
    if not isinstance(saved, dict) or not isinstance(saved.get("run"), dict):
        raise PromptgenError(f"{run_dir / CONFIG}: expected an object with a 'run' table")
    try:
        return from_dict(RunConfig, saved["run"])
    except PromptgenError as error:
        raise PromptgenError(f"{run_dir / CONFIG}: {error}") from None
