"""python -m benchmarks.run: the project's main job. Runs a suite, prints its table and writes its records.

Suites (more arrive with the full harness):
  default     zero-shot accuracy of a backbone on every domain of a dataset (quick, CPU-friendly)
  truncation  EOT-truncated vs full-length text encoding: speed-up and max difference
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import truncation, zeroshot
from promptgen.cli import add_backbone_arguments
from promptgen.config import BackboneConfig
from promptgen.errors import PromptgenError

SUITES = {
    "default": "zero-shot accuracy on every domain of --dataset (quick)",
    "truncation": "EOT-truncated vs full-length text encoding at --classes class counts",
}


def run_default(args, backbone) -> tuple[str, dict]:
    record = zeroshot.run(backbone, args.dataset, progress=not args.quiet)
    return zeroshot.table(record), record


def run_truncation(args, backbone) -> tuple[str, dict]:
    rows = [
        truncation.measure(backbone, count, images=args.images, repeats=args.repeats)
        for count in args.classes
    ]
    return truncation.table(rows, backbone.fingerprint), {"suite": "truncation", "rows": rows}


RUNNERS = {"default": run_default, "truncation": run_truncation}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", default="default", choices=sorted(SUITES), help="suite to run (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    add_backbone_arguments(parser)
    parser.add_argument("--dataset", default="digits-dg", help="dataset plugin for the default suite (default: %(default)s)")
    parser.add_argument("--classes", type=int, nargs="+", default=[7, 345], help="class counts for truncation")
    parser.add_argument("--images", type=int, default=1, help="per-image contexts per pass for truncation")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) for truncation")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, summary in SUITES.items():
            print(f"{name:<12} {summary}")
        return 0
    try:
        start = time.perf_counter()
        backbone = BackboneConfig(
            model=args.model, pretrained=args.pretrained, name=args.backbone, device=args.device,
            precision=args.precision,
        ).build()
        text, record = RUNNERS[args.suite](args, backbone)
        record["seconds"] = time.perf_counter() - start
    except PromptgenError as error:
        print(f"benchmarks.run: error: {error}", file=sys.stderr)
        return 2
    out = args.out / args.suite
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps(record, indent=2))
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out / 'table.md'} and {out / 'record.json'} ({record['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
