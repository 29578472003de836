"""Where a prompt-generation run loses accuracy: its stage I labels, its generator's mapping, or its collapse.

For a finished run of any method that has stage I prompt labels (``prompt_labels()``) and gives each
image its own prompt (``instance_prompts(run, split, draws)``), per split (each held-out domain's test,
the sources' val):

- every label used as one fixed prompt, and their mean: what stage I alone gives;
- the label nearest each image's generated prompt, used instead of it (an assignment that needs no
  image label) and the oracle: an image counts as right if any label classifies it right;
- the generated prompts as tested (the run's own draw) and over several noise draws;
- distances (RMS per prompt entry) from the generated prompts to each label and to their own mean,
  beside the labels' own spread: a generator whose prompts barely move from their mean has collapsed.

The reading (``verdict``) names the step with the largest drop. Thresholds are the instrument's, stated
below, not tuned to any method.
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptgen.errors import ConfigError
from promptgen.runs.prompt_distance import label_rms, label_stack, rms
from promptgen.toolkit.evaluate import context_logits, prompt_logits
from promptgen.toolkit.prompts import PromptAssembler

# Generated prompts whose spread around their mean is below this share of the labels' spread around theirs
# are called collapsed: one prompt (or nearly) whatever the image.
COLLAPSE_RATIO = 0.1
# A drop smaller than this (accuracy, 0-1) is not named as where the gain is lost.
NOTABLE_DROP = 0.02


def _correct(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return scores.argmax(dim=-1).cpu() == labels.cpu()


def inspect_split(backbone, classes, labels, features, prompts: torch.Tensor, drawn: torch.Tensor) -> dict:
    """The figures of one split. ``labels``: PromptLabels [K]; ``prompts``: the generated prompts as tested
    [N, n_ctx, D]; ``drawn``: more draws [draws, N, n_ctx, D]."""
    stack = label_stack(labels)  # [K, n_ctx, D]
    assembler = PromptAssembler(backbone, classes, stack.shape[1])
    image_features, targets = features.features, features.labels

    def fixed(ctx):
        return _correct(prompt_logits(backbone, assembler, ctx.to(backbone.device), image_features), targets)

    label_correct = torch.stack([fixed(ctx) for ctx in stack])  # [K, N]
    mean_label = stack.mean(0)
    prompts = prompts.float().cpu()
    to_labels = rms(prompts[:, None], stack[None])  # [N, K]
    nearest = to_labels.argmin(dim=1)
    rows = torch.arange(len(targets))

    def generated(contexts):
        return _correct(context_logits(backbone, assembler, image_features, contexts), targets)

    per_draw = torch.stack([generated(d.float()) for d in drawn]).float()  # [draws, N]
    spread = rms(prompts, prompts.mean(0)).mean().item()
    label_spread = rms(stack, mean_label).mean().item()
    names = [label.domain for label in labels]
    return {
        "images": len(targets),
        "labels": {name: label_correct[k].float().mean().item() for k, name in enumerate(names)},
        "mean_label": fixed(mean_label).float().mean().item(),
        "nearest_label": label_correct[nearest, rows].float().mean().item(),
        "oracle_label": label_correct.any(dim=0).float().mean().item(),
        "generated": generated(prompts).float().mean().item(),
        "generated_draws": {"draws": len(drawn), "mean": per_draw.mean().item(),
                            "sd": per_draw.mean(1).std().item() if len(drawn) > 1 else 0.0,
                            "prediction_changes": (per_draw.min(0).values != per_draw.max(0).values).float().mean()
                            .item(),
                            "mean_prompt": generated(drawn.float().mean(0)).float().mean().item()},
        "nearest_share": {name: (nearest == k).float().mean().item() for k, name in enumerate(names)},
        "distance_to_label": {name: to_labels[:, k].mean().item() for k, name in enumerate(names)},
        "distance_between_labels": {f"{names[i]}|{names[j]}": rms(stack[i], stack[j]).item()
                                    for i in range(len(names)) for j in range(i + 1, len(names))},
        "distance_to_nearest": to_labels.min(dim=1).values.mean().item(),
        "spread": spread,
        "label_spread": label_spread,
        "label_scale": label_rms(stack),
        "draw_spread": rms(drawn.float(), drawn.float().mean(0)).mean().item(),
        "collapsed": label_spread > 0 and spread < COLLAPSE_RATIO * label_spread,
    }


def verdict(figures: dict) -> str:
    """One sentence: which step between stage I's labels and the generated prompts loses the most."""
    best = max(figures["labels"].values())
    steps = [("stage I's labels: the best single label", best),
             ("the mean of the labels", figures["mean_label"]),
             ("the label nearest each generated prompt", figures["nearest_label"]),
             ("the generated prompts", figures["generated"])]
    text = ", ".join(f"{name} {100 * value:.1f}" for name, value in steps)
    text += f" (oracle choice of label {100 * figures['oracle_label']:.1f})"
    if figures["collapsed"]:
        return (f"collapsed: the generated prompts spread {figures['spread']:.3g} around their mean, under "
                f"{COLLAPSE_RATIO:g} of the labels' {figures['label_spread']:.3g}; {text}")
    drop = best - figures["generated"]
    if drop < NOTABLE_DROP:
        return f"no notable loss from the best label to the generated prompts; {text}"
    mapping = figures["nearest_label"] - figures["generated"]
    where = ("the generator's mapping (its prompts score below the labels they are nearest)" if mapping >= NOTABLE_DROP
             else "the choice of label (the generated prompts are as good as the labels they are nearest, and those "
                  "are not the best ones)")
    return f"lost in {where}; {text}"


def inspect_run(run_dir: str | Path, *, draws: int = 5, registry=None, progress: bool = False) -> dict:
    """The figures of every split of a finished run (module docstring), with a verdict for each."""
    from promptgen.runs.engine import opened

    if draws < 1:
        raise ConfigError(f"inspect: --draws must be >= 1, got {draws}")
    with opened(run_dir, registry=registry, progress=progress) as (method, run):
        labels_of, prompts_of = getattr(method, "prompt_labels", None), getattr(method, "instance_prompts", None)
        if labels_of is None or prompts_of is None:
            raise ConfigError(f"{run_dir}: method {type(method).__name__} has no prompt labels and generated prompts "
                              f"to inspect (a method needs prompt_labels() and instance_prompts(run, split, draws))")
        labels = list(labels_of())
        splits = [f"test/{domain}" for domain in run.targets] + ["val"]
        out = {"run": str(run_dir), "method": type(method).__name__, "sources": list(run.sources), "splits": {}}
        for split in splits:
            figures = inspect_split(run.backbone, run.classes, labels, run.features(split),
                                    prompts_of(run, split), prompts_of(run, split, draws=draws))
            figures["method_accuracy"] = _correct(method.logits(run, split), run.features(split).labels) \
                .float().mean().item()
            figures["verdict"] = verdict(figures)
            out["splits"][split] = figures
    return out


def text(report: dict) -> str:
    """The report as a reader reads it: one block per split."""
    lines = [f"{report['run']}: {report['method']}, sources {', '.join(report['sources'])}"]
    for split, f in report["splits"].items():
        pct = lambda value: f"{100 * value:5.1f}"  # noqa: E731
        lines += ["", f"{split} ({f['images']} images)",
                  f"  method as tested           {pct(f['method_accuracy'])}",
                  f"  generated prompts          {pct(f['generated'])}  (over {f['generated_draws']['draws']} "
                  f"draws {pct(f['generated_draws']['mean'])} sd {100 * f['generated_draws']['sd']:.1f}; "
                  f"mean prompt over draws {pct(f['generated_draws']['mean_prompt'])}; prediction changes "
                  f"with the noise for {pct(f['generated_draws']['prediction_changes'])}% of images)",
                  f"  nearest label per image    {pct(f['nearest_label'])}",
                  f"  oracle label per image     {pct(f['oracle_label'])}",
                  f"  mean of the labels         {pct(f['mean_label'])}"]
        lines += [f"  label {name:<20} {pct(value)}  nearest to {pct(f['nearest_share'][name])}% of prompts, "
                  f"distance {f['distance_to_label'][name]:.4f}" for name, value in f["labels"].items()]
        between = ", ".join(f"{pair} {value:.4f}" for pair, value in f["distance_between_labels"].items())
        lines += [f"  spread of generated prompts {f['spread']:.4f} (across draws of one image "
                  f"{f['draw_spread']:.4f}); labels' spread {f['label_spread']:.4f}"
                  + (f"; between labels {between}" if between else ""),
                  f"  distance to the nearest label {f['distance_to_nearest']:.4f}; a label's entries are "
                  f"{f['label_scale']:.4f} (RMS)",
                  f"  reading: {f['verdict']}"]
    return "\n".join(lines)
