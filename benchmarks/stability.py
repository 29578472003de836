"""The stability study of generated prompts: how much they change across seeds, and within one model.

A suite with ``stability = true`` (``digits-stability``) adds it to its outputs (``stability.md``,
``stability.csv``, ``records/stability.json``). For every method whose instances give each image a
prompt (``instance_prompts(run, split)``, e.g. ``spg-*`` and ``dpspg``) and every held-out domain,
from the trained runs of the sweep:

  seed distance   the mean L2 distance between the prompts two seeds' models give the same test
                  image (over images and seed pairs); ``relative``: divided by the mean prompt norm
  draw distance   the same between two noise draws of one model (mean over seeds): the variability
                  within a model, 0 for a deterministic generator
  1 draw          test accuracy with one noise draw per image: mean and std over ``draws`` draws
                  (mean over seeds)
  k draws         test accuracy of the logits averaged over the ``draws`` draws (mean over seeds)

Every model is rebuilt from its run directory (``promptgen.runs.engine.opened``) and asked for
``instance_prompts(run, split, draws=k)`` and ``logits(run, split, draws=k)`` ([k, N, ...]: k noise
draws per image, promptgen.toolkit.evaluate.per_draw); promptgen's generators seed their noise per call,
so the study is reproducible.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict

import torch

from benchmarks import protocols
from promptgen.runs import engine
from promptgen.toolkit.evaluate import accuracy

DRAWS = 10


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _one_model(run_dir: str, target: str, draws: int, registry) -> dict:
    with engine.opened(run_dir, registry=registry, progress=False) as (method, run):
        split = f"test/{target}"
        labels = run.labels(split)
        torch.manual_seed(0)  # for a generator that draws from the global RNG: every model sees the same stream
        prompts = method.instance_prompts(run, split, draws=2).flatten(2).float()  # [2, N, P]
        torch.manual_seed(0)
        # a generator whose two draws agree is deterministic: one draw is every draw
        deterministic = torch.equal(prompts[0], prompts[1])
        scores = method.logits(run, split, draws=1 if deterministic else draws).float()  # [draws, N, C]
        scores = scores.expand(draws, -1, -1) if deterministic else scores
    single = [accuracy(s, labels) for s in scores]
    return {"prompts": prompts[0], "norm": float(prompts[0].norm(dim=1).mean()),
            "draw_distance": float((prompts[0] - prompts[1]).norm(dim=1).mean()),
            "one_draw": _mean(single), "one_draw_std": statistics.stdev(single) if draws > 1 else 0.0,
            "k_draws": accuracy(scores.mean(0), labels)}


def study(records: list[dict], registry, draws: int = DRAWS, progress: bool = True) -> list[dict]:
    """One row per (method, target) of the finished records whose method gives instance prompts."""
    groups = defaultdict(list)
    for record in records:
        if record.get("status") == "ok" and record.get("run_dir"):
            job = record["job"]
            if callable(protocols.method_attribute(registry, job["method"], "instance_prompts", None)):
                groups[(job["method"], job["targets"][0])].append(record)
    rows = []
    for (method, target), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: r["job"]["seed"])
        if progress:
            print(f"stability: {method} on {target}: {len(group)} seeds x {draws} draws ...", flush=True)
        models = [_one_model(r["run_dir"], target, draws, registry) for r in group]
        pairs = list(itertools.combinations(models, 2))
        seed_distance = _mean(float((a["prompts"] - b["prompts"]).norm(dim=1).mean()) for a, b in pairs) \
            if pairs else float("nan")
        norm = _mean(m["norm"] for m in models)
        rows.append({"method": method, "target": target, "seeds": len(models), "draws": draws,
                     "seed_distance": seed_distance, "seed_distance_relative": seed_distance / norm,
                     "draw_distance": _mean(m["draw_distance"] for m in models),
                     "draw_distance_relative": _mean(m["draw_distance"] for m in models) / norm,
                     "prompt_norm": norm, "one_draw": _mean(m["one_draw"] for m in models),
                     "one_draw_std": _mean(m["one_draw_std"] for m in models),
                     "k_draws": _mean(m["k_draws"] for m in models)})
    return rows


def _number(value: float, scale: float = 1.0, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{scale * value:.{digits}f}"


def table(rows: list[dict]) -> str:
    draws = rows[0]["draws"] if rows else DRAWS
    lines = [f"| method | target | seeds | seed distance (relative) | draw distance (relative) | 1 draw % (± std "
             f"over draws) | {draws} draws averaged % |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['target']} | {r['seeds']} | {_number(r['seed_distance'])} "
                     f"({_number(r['seed_distance_relative'])}) | {_number(r['draw_distance'])} "
                     f"({_number(r['draw_distance_relative'])}) | {_number(r['one_draw'], 100)} ± "
                     f"{_number(r['one_draw_std'], 100)} | {_number(r['k_draws'], 100)} |")
    return "\n".join(lines)


def csv(rows: list[dict]) -> str:
    keys = ["method", "target", "seeds", "draws", "seed_distance", "seed_distance_relative", "draw_distance",
            "draw_distance_relative", "prompt_norm", "one_draw", "one_draw_std", "k_draws"]
    return "\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n"
