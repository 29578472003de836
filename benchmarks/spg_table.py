"""Leave-one-domain-out table of zero-shot, CoOp and SPG on a dataset: python -m benchmarks.spg_table.

Runs every (target, method, seed) through promptgen.engine.run, then prints mean +- std over seeds.
The full harness (suites, launchers, resume, plots) replaces this with the benchmark suites.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.tables import accuracy_table
from promptgen.config import BackboneConfig
from promptgen.engine import RunConfig, run
from promptgen.registry import create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits-dg")
    parser.add_argument("--methods", default="zero-shot,coop,spg")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("runs/spg-table"))
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    domains = create("dataset", args.dataset).domains
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    records = []
    for target in domains:
        for method in methods:
            for seed in seeds if method != "zero-shot" else seeds[:1]:  # zero-shot has no randomness
                out = args.out / target / f"{method}-seed{seed}"
                start = time.perf_counter()
                metrics = run(RunConfig(dataset=args.dataset, target=target, method=method, seed=seed,
                                        backbone=BackboneConfig(device="cpu"), cache_dir=args.cache_dir), out,
                              progress=False)
                records.append(metrics)
                print(f"{target:>12} {method:>9} seed {seed}: {100 * metrics['test_accuracy']:.2f}% "
                      f"{json.dumps(metrics['seconds'])} total {time.perf_counter() - start:.1f}s", flush=True)
    print("\n" + accuracy_table(records, targets=domains, methods=methods).markdown(
        f"Test accuracy (%) on {args.dataset}, leave one domain out, mean ± std over seeds {args.seeds}"))


if __name__ == "__main__":
    main()
