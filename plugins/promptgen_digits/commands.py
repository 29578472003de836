"""`promptgen world preview|pretrain|report`: look at, rebuild and measure the digits world."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from promptgen.config import BackboneConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"


def add_world_command(commands) -> None:
    world = commands.add_parser("world", help="the digits world: preview digits-dg, pretrain tiny-clip-digits, report")
    actions = world.add_subparsers(dest="world_command", metavar="ACTION", required=True)

    preview = actions.add_parser("preview", help="write a PNG grid of digits-dg (rows = domains, columns = classes)")
    preview.add_argument("--out", type=Path, default=Path("digits-dg-preview.png"), help="PNG path (default: %(default)s)")
    preview.add_argument("--per-cell", type=int, default=3, help="images per domain and class (default: %(default)s)")
    _dataset_arguments(preview)
    preview.set_defaults(run=run_preview)

    pretrain = actions.add_parser("pretrain", help="pretrain tiny-clip-digits from scratch and write its weights and card")
    pretrain.add_argument("--steps", type=int, default=2000)
    pretrain.add_argument("--batch-size", type=int, default=256)
    pretrain.add_argument("--lr", type=float, default=1e-3)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    pretrain.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output directory (default: the shipped weights)")
    pretrain.add_argument("--cache-dir", default=None, help="where digits-dg is generated (for the card's evaluation)")
    pretrain.set_defaults(run=run_pretrain)

    report = actions.add_parser("report", help="zero-shot, cross-domain linear probe and domain-classifier tables")
    report.add_argument("--backbone", default="tiny-clip-digits")
    report.add_argument("--model", default=None)
    report.add_argument("--pretrained", default=None)
    report.add_argument("--device", default="auto")
    report.add_argument("--json", action="store_true", help="print the numbers as JSON instead of markdown")
    _dataset_arguments(report)
    report.set_defaults(run=run_report)


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="digits-dg seed (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, help="where digits-dg is generated (default: promptgen's cache)")


def run_preview(args) -> int:
    from promptgen_digits.dataset import DigitsDG
    from promptgen_digits.report import preview

    path = preview(DigitsDG(seed=args.seed, cache_dir=args.cache_dir), args.out, per_cell=args.per_cell)
    print(f"wrote {path}")
    return 0


def run_report(args) -> int:
    from promptgen_digits.dataset import DigitsDG
    from promptgen_digits.report import build_report, markdown

    backbone = BackboneConfig(model=args.model, pretrained=args.pretrained, name=args.backbone, device=args.device).build()
    report = build_report(backbone, DigitsDG(seed=args.seed, cache_dir=args.cache_dir))
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


def run_pretrain(args) -> int:
    from promptgen_digits import glyphs, styles
    from promptgen_digits.backbone import TinyClipDigits
    from promptgen_digits.dataset import DigitsDG
    from promptgen_digits.pretrain import PretrainConfig, pretrain, write_card
    from promptgen_digits.report import SUBSET_STRIDE, ZERO_SHOT_PHRASE, domain_features, zero_shot

    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    facts = pretrain(config, args.out, device=args.device)
    backbone = TinyClipDigits(pretrained=str(args.out / facts["weights"]), device="cpu")
    dataset = DigitsDG(seed=0, cache_dir=args.cache_dir)
    card = {
        "model": "tiny-clip-digits",
        "command": "promptgen " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        **facts,
        "fingerprint": backbone.fingerprint,
        "data_recipe": {
            "pretraining_pairs": f"{config.steps * config.batch_size} generated on the fly (seed {config.seed})",
            "styles": "plain, handwritten, typeset (grey-tinted ground and ink, either polarity), photo (MNIST-M), sketch (outline only)",
            "pretrain_fonts": list(glyphs.PRETRAIN_FONTS),
            "held_out_fonts": list(glyphs.HELD_OUT_FONTS),
            "pretrain_photos": list(styles.PRETRAIN_PHOTOS),
            "held_out_photos": list(styles.HELD_OUT_PHOTOS),
            "uci_digits": "even indices in pretraining, odd indices in digits-dg",
            "held_out_styles": "ruled paper and red ink; saturated colour-on-colour type; hatched sketches",
        },
        "zero_shot_prompt": f"{ZERO_SHOT_PHRASE} {{digit}}.",
        "zero_shot_test": zero_shot(backbone, dataset, domain_features(backbone, dataset, "test")),
        "zero_shot_subset": {
            "rule": f"digits-dg seed 0, test split, every {SUBSET_STRIDE}th sample of each domain, device cpu",
            "accuracy": zero_shot(backbone, dataset, domain_features(backbone, dataset, "test", stride=SUBSET_STRIDE)),
        },
    }
    path = write_card(args.out, card)
    print(json.dumps(card["zero_shot_test"], indent=2))
    print(f"wrote {args.out / facts['weights']} and {path}")
    return 0
