"""What each method costs: the time and the peak memory of its training and of its inference.

The perf suite's ``methods`` measurement. Every method runs in a fresh process (its memory is its
own) on one leave-one-out split of the suite's dataset, every stage cut to one epoch (each
component's ``epochs`` option set to 1 and its ``warmup_epochs`` to 0: a cost per epoch, not a
trained model), stage I trained, not loaded from the label store. Per method:

  train        seconds of ``fit`` and its peak memory above what the process held before it
               (the backbone, the dataset and the split's cached features are loaded first)
  inference    the target domain's test images scored with the fitted method: images/s and the
               peak memory above what the process held before scoring

CPU memory is the resident set's high-water mark (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` before each phase); on a GPU also ``torch.cuda.max_memory_allocated``
above the memory already allocated. These are the numbers that say, e.g., that CoCoOp's B x C
prompts per step need far more memory than CoOp's C.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
import attrs
import torch

from benchmarks import protocols
from promptgen.runs import engine
from promptgen.runs.config import BackboneConfig, RunConfig
from promptgen.errors import ConfigError
from promptgen.components.registry import default_registry
from promptgen.components.resolve import Settings, build
from promptgen.components.schedule import Schedule
from promptgen.components.run_values import RunValues

MEGABYTE = 2**20


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise ConfigError(f"perf: methods: /proc/self/status has no {field} (peak memory is measured on Linux only)")


class Peak:
    """The peak memory of a block above what the process held when it started (CPU and, if any, CUDA)."""

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current resident set
        self.rss = _status_mb("VmRSS")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda = torch.cuda.memory_allocated() / MEGABYTE
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.cuda_mb = torch.cuda.max_memory_allocated() / MEGABYTE - self.cuda
        self.seconds = time.perf_counter() - self.start
        self.rss_mb = _status_mb("VmHWM") - self.rss
        return False


def one_epoch(registry, method: str, names) -> dict:
    """Overrides cutting the method and every component it uses that trains by the schedule block
    (promptgen.components.schedule.Schedule) to one epoch without warm-up (an epoch costs the same at any rate; a
    run that is all warm-up is refused: promptgen.toolkit.lr_schedules.check_warmup)."""
    overrides = {}
    for kind, name in (("method", method), *names):
        component = registry.get(kind, name)
        if set(Schedule.REQUIRED) <= set(component.options):
            overrides[component.name] = {"epochs": 1, **({"warmup_epochs": 0} if "warmup_epochs" in
                                                          component.options else {})}
    return overrides


def _cost(settings: dict, method: str) -> dict:
    """One method in this process: fit (one epoch per stage) and score the target's test split."""
    torch.set_num_threads(settings.get("threads") or torch.get_num_threads())
    return _measured(settings, method)


def _measured(settings: dict, method: str) -> dict:
    registry = default_registry()
    config = RunConfig(targets=(settings["target"],), dataset=settings["dataset"], method=method,
                       backbone=settings["backbone"], preset=settings["preset"], views=1,
                       cache_dir=settings["cache_dir"])
    checked = engine.check(config, registry)
    config = attrs.evolve(config, overrides=one_epoch(registry, checked.method_name, checked.components))
    # a method's cost includes its stage I: never load labels another method trained
    with engine.run_setup(config, registry, progress=False, reuse_labels=False) as (checked, run):
        split = f"test/{settings['target']}"
        if checked.method.inputs == "features":  # the cache's reads are not the method's cost
            for name in ("train", "val", split):
                run.features(name)
        with Peak() as train:
            checked.method.fit(run)
        with Peak() as inference:
            scores = checked.method.logits(run, split)
    row = {"method": checked.method_name, "inputs": checked.method.inputs, "train_s": train.seconds,
           "train_rss_mb": train.rss_mb, "inference_images_per_s": len(scores) / inference.seconds,
           "inference_rss_mb": inference.rss_mb, "test_images": len(scores)}
    if torch.cuda.is_available():
        row.update(train_cuda_mb=train.cuda_mb, inference_cuda_mb=inference.cuda_mb)
    return row


def _in_fresh_process(settings: dict, method: str) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
        return pool.submit(_cost, settings, method).result()


def measure(settings: dict, progress: bool = True) -> list[dict]:
    """One row per method of ``settings["methods"]`` ("all": every method that runs on the backbone)."""
    registry, skipped = default_registry(), []
    methods = protocols.resolve_methods(settings.get("methods", ["all"]), "perf: methods", registry,
                                        BackboneConfig(**settings["backbone"]), skipped)
    target = settings.get("target") or build(registry, "dataset", settings["dataset"],
                                             Settings(settings.get("preset", "cpu")), RunValues()).domains[-1]
    settings = {"preset": "cpu", "cache_dir": None, **settings, "target": target}
    call = _in_fresh_process if settings.get("fresh_processes", True) else _cost
    rows = []
    for method in methods:
        if progress:
            print(f"perf: methods: {method} ...", flush=True)
        rows.append(call(settings, method))
    for name, reason in skipped:
        rows.append({"method": name, "skipped": reason})
    return rows


def table(rows: list[dict], heading: str) -> str:
    cuda = any("train_cuda_mb" in r for r in rows)
    head = "| method | inputs | train s (1 epoch/stage) | train peak MB | inference images/s | inference peak MB |"
    lines = [heading, "", head + (" train / inference CUDA MB |" if cuda else ""),
             "|---|---|---:|---:|---:|---:|" + ("---:|" if cuda else "")]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['method']} | skipped: {r['skipped']} | | | | |" + (" |" if cuda else ""))
            continue
        line = (f"| {r['method']} | {r['inputs']} | {r['train_s']:.1f} | {r['train_rss_mb']:.0f} | "
                f"{r['inference_images_per_s']:,.0f} | {r['inference_rss_mb']:.0f} |")
        if cuda:
            line += f" {r['train_cuda_mb']:.0f} / {r['inference_cuda_mb']:.0f} |"
        lines.append(line)
    return "\n".join(lines)


def csv(rows: list[dict]) -> str:
    keys = ["method", "inputs", "train_s", "train_rss_mb", "inference_images_per_s", "inference_rss_mb",
            "train_cuda_mb", "inference_cuda_mb", "test_images", "skipped"]
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    return "\n".join(lines) + "\n"
