"""``promptgen train`` (one DG run into its directory), ``promptgen evaluate`` (score a run directory again) and
``promptgen inspect`` (where a prompt-generation run loses accuracy)."""

from __future__ import annotations

import argparse

from promptgen.cli.common import backbone_config
from promptgen.runs.settings import merge_overrides, method_overrides, parse_settings


def cmd_train(args: argparse.Namespace) -> int:
    """Train one DG run of a method (e.g. SPG: stage I -> stage II -> test on each target) and write its directory."""
    from pathlib import Path

    from promptgen.runs.config import RunConfig, check_names
    from promptgen.components.registry import default_registry

    registry = default_registry()
    overrides = merge_overrides(parse_settings(args.set),
                                method_overrides(registry, args.method, {"learner": args.learner,
                                                                         "generator": args.generator}))
    config = RunConfig(dataset=args.dataset, targets=args.target, sources=args.sources,
                       target_dataset=args.target_dataset, method=args.method, seed=args.seed,
                       preset=args.preset, backbone=backbone_config(args), views=args.views,
                       epoch=args.epoch, overrides=overrides, cache_dir=args.cache_dir, data_root=args.data_root,
                       num_workers=args.workers)
    check_names(config, registry)  # a misspelt name fails here, before torch and the backbone load
    from promptgen.runs.engine import run

    targets = "+".join(args.target)
    out = Path(args.out) if args.out else Path("runs") / args.dataset / targets / f"{args.method}-seed{args.seed}"
    if args.dry_run:
        from promptgen.runs import dry_run
        from promptgen.runs.engine import check, plan_run

        checked = check(config, registry)
        plan = plan_run(config, registry, checked, False)
        print(dry_run.text(dry_run.describe(config, registry, checked, plan, out)))
        return 0
    if args.log == "tensorboard":
        from promptgen.runs.curves import require_tensorboard

        require_tensorboard()  # before training, not after it
    metrics = run(config, out, registry=registry, progress=not args.quiet, force=args.force)
    if args.log == "tensorboard":
        from promptgen.runs.curves import TENSORBOARD_DIR, write_tensorboard

        if write_tensorboard(out, out / TENSORBOARD_DIR):
            print(f"TensorBoard events: tensorboard --logdir {out / TENSORBOARD_DIR}")
    stages = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in metrics["seconds"].items())
    tested = ", ".join(f"{domain} {100 * value:.2f}%" for domain, value in metrics["test_accuracy"].items())
    print(f"{args.method} on {args.dataset}, sources {'+'.join(metrics['sources'])}: test accuracy {tested} "
          f"(source val {100 * metrics['val_accuracy']:.2f}%; {stages})")
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-evaluate a run directory from disk (prompt labels, generator, cached features)."""
    from pathlib import Path

    from promptgen.runs.engine import evaluate_run
    from promptgen.files import dumps, read_json

    result = evaluate_run(args.run_dir, progress=not args.quiet)
    saved = read_json(Path(args.run_dir) / "metrics.json", "run metrics")
    print(dumps({**result, "saved_test_accuracy": saved.get("test_accuracy")}, indent=2))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Where a prompt-generation run (SPG, DPSPG, any method with prompt labels and generated prompts) loses
    accuracy: each stage I label as a fixed prompt, their mean, the nearest and the best label per image, the
    generated prompts over noise draws, and how far they spread (collapse)."""
    from promptgen.files import dumps
    from promptgen.runs.inspect import inspect_run, text

    report = inspect_run(args.run_dir, draws=args.draws, progress=not args.quiet)
    print(dumps(report, indent=2) if args.json else text(report))
    return 0
