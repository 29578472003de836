"""`promptgen world preview|pretrain|report`: look at, rebuild and measure the digits world."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from promptgen.runs.config import BackboneConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"
WORLD_DATASETS = ("digits-dg", "digits-traps")


def add_world_command(commands) -> None:
    world = commands.add_parser("world", help="the digits world: preview its datasets, pretrain tiny-clip-digits, report")
    actions = world.add_subparsers(dest="world_command", metavar="ACTION", required=True)

    preview = actions.add_parser("preview", help="write a PNG grid of a world dataset (rows = domains, columns = classes)")
    preview.add_argument("--dataset", choices=WORLD_DATASETS, default="digits-dg", help="(default: %(default)s)")
    preview.add_argument("--out", type=Path, default=None, help="PNG path (default: <dataset>-preview.png)")
    preview.add_argument("--per-cell", type=int, default=3, help="images per domain and class (default: %(default)s)")
    _dataset_arguments(preview)
    preview.set_defaults(run=run_preview)

    pretrain = actions.add_parser(
        "pretrain", help="pretrain tiny-clip-digits and write its weights and card: the whole CLIP from scratch "
                         "(first edition), or --text-only (LiT: the text tower against a locked image tower)")
    pretrain.add_argument("--text-only", action="store_true",
                          help="LiT: lock the image tower of --image-weights and train only the text tower, against "
                               "cached image features of a fixed pool (the second edition; resumes from its checkpoint)")
    pretrain.add_argument("--steps", type=int, default=None, help="default: 2000 (whole CLIP) or 600 (--text-only)")
    pretrain.add_argument("--batch-size", type=int, default=256)
    pretrain.add_argument("--lr", type=float, default=1e-3)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--captions", choices=("templates", "web"), default=None,
                          help="caption recipe (docs/world.md): 'templates' (first edition, every caption names the "
                               "digit) or 'web' (second edition); default: templates, or web with --text-only")
    pretrain.add_argument("--pool-size", type=int, default=30_000, help="--text-only: images in the LiT pool")
    pretrain.add_argument("--image-weights", type=Path, default=None,
                          help="--text-only: the weights whose image tower is locked (default: the shipped ones)")
    pretrain.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    pretrain.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output directory (default: the shipped weights)")
    pretrain.add_argument("--cache-dir", default=None,
                          help="where the datasets and the LiT pool are generated and their features cached")
    pretrain.set_defaults(run=run_pretrain)

    report = actions.add_parser("report", help="zero-shot, cross-domain linear probe and domain-classifier tables")
    report.add_argument("--backbone", default="tiny-clip-digits")
    report.add_argument("--model", default=None)
    report.add_argument("--pretrained", default=None)
    report.add_argument("--device", default="auto")
    report.add_argument("--json", action="store_true", help="print the numbers as JSON instead of markdown")
    report.add_argument("--dataset", action="append", choices=WORLD_DATASETS, default=None,
                        help="a dataset of the digits world (repeatable; default: all of them)")
    _dataset_arguments(report)
    report.set_defaults(run=run_report)


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="digits-dg seed (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, help="where digits-dg is generated (default: promptgen's cache)")


def run_preview(args) -> int:
    from promptgen_digits.report import preview

    dataset = world_datasets([args.dataset], args.seed, args.cache_dir)[args.dataset]
    path = preview(dataset, args.out or Path(f"{args.dataset}-preview.png"), per_cell=args.per_cell)
    print(f"wrote {path}")
    return 0


def world_datasets(names, seed: int, cache_dir) -> dict:
    from promptgen.toolkit import create

    return {name: create("dataset", name, seed=seed, cache_dir=cache_dir) for name in names}


def run_report(args) -> int:
    from promptgen_digits.report import build_report, markdown

    backbone = BackboneConfig(model=args.model, pretrained=args.pretrained, name=args.backbone, device=args.device).build()
    datasets = world_datasets(args.dataset or WORLD_DATASETS, args.seed, args.cache_dir)
    report = build_report(backbone, datasets, cache_dir=args.cache_dir)
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


def run_pretrain(args) -> int:
    from promptgen_digits import glyphs, styles
    from promptgen_digits.backbone import TinyClipDigits
    from promptgen_digits.report import SUBSET_STRIDE, ZERO_SHOT_PHRASE, build_report, domain_features, zero_shot

    start = time.perf_counter()
    command = "promptgen " + " ".join(shlex.quote(a) for a in getattr(args, "command_line", sys.argv[1:]))
    _check_counts(args)
    _say_what_out_keeps(args.out)
    if args.text_only:
        facts, recipe = _text_only(args)
    else:
        facts, recipe = _whole_clip(args)
    backbone = TinyClipDigits(pretrained=str(args.out / facts["weights"]), device="cpu")
    datasets = world_datasets(WORLD_DATASETS, 0, args.cache_dir)
    subset = domain_features(backbone, datasets["digits-dg"], "test", stride=SUBSET_STRIDE)
    card = {
        "model": "tiny-clip-digits",
        "edition": 2 if args.text_only else 1,
        "command": command,
        **facts,
        "fingerprint": backbone.fingerprint,
        "image_fingerprint": backbone.image_fingerprint,
        "data_recipe": {
            **recipe,
            "styles": "plain, handwritten, typeset (grey-tinted ground and ink, either polarity), photo (MNIST-M), sketch (outline only)",
            "pretrain_fonts": list(glyphs.PRETRAIN_FONTS),
            "held_out_fonts": list(glyphs.HELD_OUT_FONTS),
            "pretrain_photos": list(styles.PRETRAIN_PHOTOS),
            "held_out_photos": list(styles.HELD_OUT_PHOTOS),
            "uci_digits": "even indices in pretraining, odd indices in digits-dg",
            "held_out_styles": "ruled paper and red ink; saturated colour-on-colour type; hatched sketches",
        },
        "zero_shot_prompt": f"{ZERO_SHOT_PHRASE} {{digit}}.",
        "zero_shot_subset": {
            "rule": f"digits-dg seed 0, test split, every {SUBSET_STRIDE}th sample of each domain, device cpu",
            "accuracy": zero_shot(backbone, datasets["digits-dg"], subset),
        },
        # `promptgen world report --json` on the same weights gives these numbers (tests/test_lit.py).
        "world_report": build_report(backbone, datasets, cache_dir=args.cache_dir)["datasets"],
    }
    card["command_wall_time_s"] = round(time.perf_counter() - start, 1)  # training, pool and the card's report
    path = write_card(args.out, card)
    print(json.dumps({name: part["zero_shot"] for name, part in card["world_report"].items()}, indent=2))
    print(f"wrote {args.out / facts['weights']} and {path}")
    return 0


def _check_counts(args) -> None:
    """Refuse a count no run can have, naming the flag (0 steps is refused, not read as "the default")."""
    from promptgen.toolkit import ConfigError

    for flag, value, least in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 2),
                               ("--pool-size", args.pool_size, 2)):
        if value is not None and value < least:
            raise ConfigError(f"world pretrain {flag} must be an integer >= {least}, got {value}")


def _say_what_out_keeps(out: Path) -> None:
    """Name what a pretraining replaces in ``--out`` and what it leaves there, before it starts."""
    from promptgen_digits.backbone import MODEL_NAME
    from promptgen_digits.lit import CHECKPOINT

    if not out.is_dir():
        return
    written = {f"{MODEL_NAME}.safetensors", f"{MODEL_NAME}.json"}
    # A LiT checkpoint is resumed from (and says so), not kept: it is not listed here.
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != CHECKPOINT)
    replaced = [name for name in present if name in written]
    kept = [name for name in present if name not in written]
    if replaced:
        print(f"note: {out} already holds {', '.join(replaced)}: this run replaces it when it finishes",
              file=sys.stderr)
    if kept:
        listed = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        print(f"note: {out} also holds {listed}: left as it is", file=sys.stderr)


def _whole_clip(args) -> tuple[dict, dict]:
    from promptgen_digits import world
    from promptgen_digits.pretrain import PretrainConfig, pretrain

    captions = args.captions or "templates"
    config = PretrainConfig(steps=2000 if args.steps is None else args.steps, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, captions=captions)
    facts = pretrain(config, args.out, device=args.device)
    return facts, {"pretraining_pairs": f"{config.steps * config.batch_size} generated on the fly (seed {config.seed})",
                   "captions": world.caption_recipe(captions)}


def _text_only(args) -> tuple[dict, dict]:
    from promptgen_digits import world
    from promptgen_digits.lit import LitConfig, train_text_tower

    captions = args.captions or "web"
    config = LitConfig(steps=600 if args.steps is None else args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, pool_size=args.pool_size, captions=captions)
    facts = train_text_tower(config, args.out, image_weights=args.image_weights, cache_dir=args.cache_dir)
    return facts, {"pretraining_pairs": f"{config.steps * config.batch_size} (pool images with a caption drawn per step)",
                   "captions": world.caption_recipe(captions)}


def write_card(out_dir: Path, card: dict) -> Path:
    from promptgen_digits.backbone import MODEL_NAME

    path = out_dir / f"{MODEL_NAME}.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
