"""`promptgen data info`: what a dataset plugin finds on disk — domains, classes, splits, problems."""

from __future__ import annotations

import json


JSON_KEYS = ("domains", "classes", "split", "splits", "split_source", "problems")


def add_data_command(commands) -> None:
    data = commands.add_parser("data", help="inspect a dataset on disk: domains, classes, splits, problems")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="domains, classes, per-domain train/val/test counts, split source, problems",
                              description=run_info.__doc__)
    info.add_argument("--dataset", required=True, help="dataset plugin, e.g. pacs, office-home, folder")
    info.add_argument("--data-root", default=None, help="the dataset's folder or its parent")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--seed", type=int, default=None, help="seed of the split when there is no official one")
    info.add_argument("--split", default=None, help="files (default: the split files, else seeded 80/20; the "
                      "whole domain tested) or official (SPG's procedure and test sets)")
    info.add_argument("--val-fraction", type=float, default=None, help="share of each class held out for val (0.2)")
    info.add_argument("--bad-images", choices=("fail", "skip"), default=None,
                      help="unreadable images: fail (default) or skip them")
    info.add_argument("--no-check-images", dest="check_images", action="store_false", default=None,
                      help="do not scan the images (PIL open + verify)")
    info.set_defaults(run=run_info)


def run_info(args) -> int:
    """Build the dataset, list and check it, and show its domains, classes, splits and problems."""
    from promptgen.toolkit import default_registry

    options = {name: value for name, value in (("seed", args.seed), ("split", args.split),
                                               ("val_fraction", args.val_fraction),
                                               ("bad_images", args.bad_images), ("check_images", args.check_images))
               if value is not None}  # only what was given: other dataset plugins may not take these
    # The installed plugins as every command sees them: one that fails to import was warned about and left out,
    # and the datasets of the others still work.
    dataset = default_registry().create("dataset", args.dataset, root=args.data_root, **options)
    info = dataset.info() if hasattr(dataset, "info") else generic_info(dataset)
    if args.json:
        print(json.dumps({key: info[key] for key in JSON_KEYS if key in info}, indent=2))
    else:
        print(text(args.dataset, info))
    return 0


def generic_info(dataset) -> dict:
    """The same facts for a dataset plugin without ``info()``, from the Dataset protocol alone."""
    from promptgen_dg_datasets.splits import SPLITS  # here, not at the top: the parser must not import torch

    return {
        "domains": list(dataset.domains),
        "classes": list(dataset.classes),
        "splits": {d: {s: len(dataset.samples(d, s)) for s in SPLITS} for d in dataset.domains},
        "split_source": {d: "plugin" for d in dataset.domains},
        "problems": [],
    }


def text(name: str, info: dict) -> str:
    lines = [f"dataset: {name}" + (f" ({info['root']})" if info.get("root") else ""),
             f"domains ({len(info['domains'])}): {', '.join(info['domains'])}",
             f"classes ({len(info['classes'])}): {', '.join(info['classes'])}"]
    if info.get("split"):
        lines.append(f"split: {info['split']}")
    lines.append("")
    width = max(len("domain"), *(len(d) for d in info["domains"]))
    lines.append(f"{'domain':<{width}}  {'train':>7}  {'val':>7}  {'test':>7}  split source")
    for domain, counts in info["splits"].items():
        lines.append(f"{domain:<{width}}  {counts['train']:>7}  {counts['val']:>7}  {counts['test']:>7}  "
                     f"{info['split_source'][domain]}")
    lines.append("")
    problems = info["problems"]
    lines.append(f"problems ({len(problems)}):" if problems else "problems: none")
    lines += [f"  - {problem}" for problem in problems]
    return "\n".join(lines)
