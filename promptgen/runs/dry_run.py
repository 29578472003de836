"""A run resolved but not trained: what it would read, build and write, and what it would cost.

``promptgen train --dry-run`` (and ``python -m benchmarks.run --dry-run``, for a suite's first job)
checks the config (as a run does: names, options, schedules), plans the domains and classes and counts
the samples of every split, then prints every component's options as it will run with them (derived
ones included: promptgen.components.resolve.effective_options) and an estimate of the text-encoder work: the
class prompts each stage encodes. Nothing heavy is built (no backbone, no features), nothing is written.

The estimate counts what promptgen's built-in components do, from their options: a prompt learner
(stage I, per source domain) encodes C prompts per step, ``epochs`` x floor(train images /
``batch_size``) steps (promptgen.toolkit.epochs; train images x views under ``epoch = "views"``); a
generator (stage II) scores the val split every epoch (val images x C); scoring a split with
per-image prompts encodes images x C prompts. A component without ``epochs``
and ``batch_size`` options is listed with its options and no estimate.
"""

from __future__ import annotations

from promptgen.components.presets import run_preset
from promptgen.components.resolve import Settings, resolved_components
from promptgen.components.run_values import RunValues
from promptgen.components.schedule import Schedule
from promptgen.toolkit.epochs import steps_per_epoch


def describe(config, registry, checked, plan, out) -> dict:
    """The resolved run as a JSON-able dict (see the module docstring)."""
    preset = run_preset(checked.preset)
    dataset, views = plan.dataset, config.views if config.views is not None else preset["views"]
    epoch = config.epoch if config.epoch is not None else preset["epoch"]
    per_image = 1 if epoch == "images" else views  # rows an epoch visits per training image
    counts = {f"train/{d}": len(dataset.samples(d, "train")) for d in plan.sources}
    counts.update({f"val/{d}": len(dataset.samples(d, "val")) for d in plan.sources})
    counts.update({f"test/{d}": len(plan.target_dataset.samples(d, "test")) for d in plan.targets})
    classes = len(plan.classes)
    options = resolved_components(registry, checked.every_component, Settings.of(config, checked.preset),
                                  RunValues(seed=config.seed))
    stages = {}
    val = sum(counts[f"val/{d}"] for d in plan.sources)
    for kind, name in checked.components:
        schedule = Schedule.of(options[kind][registry.canonical(kind, name)])  # the protocols' schedule block
        if schedule is None:
            continue
        if kind == "prompt_learner":
            steps = sum(steps_per_epoch(counts[f"train/{d}"] * per_image, schedule.batch_size) for d in plan.sources)
            stages[f"stage I ({name})"] = schedule.epochs * steps * classes
        elif kind == "generator":
            stages[f"stage II ({name}, val scoring)"] = schedule.epochs * val * classes
    stages["test (per-image prompts)"] = sum(counts[f"test/{d}"] for d in plan.targets) * classes
    return {"method": checked.method_name, "preset": checked.preset, "dataset": config.dataset,
            "sources": list(plan.sources), "targets": list(plan.targets), "classes": classes, "views": views,
            "epoch": epoch,
            "samples": counts, "components": options, "prompts_encoded_estimate": stages, "out": str(out)}


def text(summary: dict) -> str:
    """The summary as lines for a terminal."""
    lines = [f"dry run: {summary['method']} ({summary['preset']} preset) on {summary['dataset']}: sources "
             f"{', '.join(summary['sources'])} -> targets {', '.join(summary['targets'])}; {summary['classes']} "
             f"classes, {summary['views']} train view(s) per image, an epoch over the "
             f"{summary['epoch']}",
             "samples: " + ", ".join(f"{split} {n}" for split, n in summary["samples"].items())]
    for kind, components in summary["components"].items():
        for name, values in components.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items()) or "no options"
            lines.append(f"{kind.replace('_', ' ')} {name}: {shown}")
    lines.append("class prompts the text encoder would encode (estimate): " + ", ".join(
        f"{stage} {count:,}" for stage, count in summary["prompts_encoded_estimate"].items()))
    lines.append(f"would write: {summary['out']} (nothing was trained or written)")
    return "\n".join(lines)
