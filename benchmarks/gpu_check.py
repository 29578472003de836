"""The GPU check: one short script to run the day a GPU is lent, whose CPU path runs in CI.

    python -m benchmarks.gpu_check               # on a GPU: ViT-B-16, random weights (~5 min)
    python -m benchmarks.gpu_check --cpu         # the same checks on the CPU with a tiny ViT (tests)

1. the ``gpu-check`` perf suite: bf16 autocast vs fp32 (logit difference, equal predictions), stage II
   from the cache vs recomputed, inference (full-length / truncated / prefix-shared) and CoOp steps
   at 7 and 345 classes, extraction images/s, each arm's peak RSS and peak CUDA memory;
2. a 2-process torchrun sweep (each rank takes every other job, on GPU LOCAL_RANK modulo the GPUs),
   then ``--report`` joins the shards' records into one table.

Exact paths are checked (prefix-shared logits and CoOp gradients equal the whole-prompt ones); the
rest is measured and printed. Outputs under --out (default results/gpu-check); exit status 1 if a
check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import suites

SUITES = Path(__file__).parent / "suites"

# (measurement row, the largest difference an exact path may show)
EXACT = {"prefix": 1e-3, "coop-step": 1e-3}  # fp32 on GPUs may use TF32 kernels: 1e-3, not 1e-5


def _run(command: list[str], env: dict | None = None) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, **(env or {})})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the CPU path: a tiny ViT, few steps (CI)")
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suite = SUITES / ("gpu-check-cpu.toml" if args.cpu else "gpu-check.toml")
    python = sys.executable
    _run([python, "-m", "benchmarks.run", "--suite", str(suite), "--out", str(args.out / "perf"), "--quiet"])
    rows = json.loads((args.out / "perf" / "records" / "perf.json").read_text())["rows"]
    failures = [f"{row['measurement']}: max difference {row['max_logit_diff']:.2e} > {limit}"
                for row in rows for name, limit in EXACT.items()
                if row["measurement"].startswith(name + " ") and row["max_logit_diff"] > limit]

    # the CPU path: its perf suite's backbone for the shards too; on a GPU: the shard suite's ViT-B-16
    cpu = suites.load(str(suite)).template["backbone"] if args.cpu else {}
    backbone = ["--model", cpu["model"], "--device", cpu["device"]] if args.cpu else []
    sweep = [str(SUITES / "gpu-check-shards.toml"), "--out", str(args.out / "shards"), "--quiet", *backbone]
    _run([python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "benchmarks.run",
          "--suite", *sweep], env={"OMP_NUM_THREADS": "1"})
    _run([python, "-m", "benchmarks.run", "--suite", *sweep, "--report"])
    summary = json.loads((args.out / "shards" / "summary.json").read_text())
    if summary["ok"] != 2 or summary["missing"]:
        failures.append(f"torchrun shards: {summary}")
    print("\ngpu check: " + ("all checks passed" if not failures else "FAILED:\n  " + "\n  ".join(failures)))
    print(f"outputs: {args.out}/perf/table.md, {args.out}/shards/table.md")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
