"""Stage I once: prompt labels stored by what they compute, reused by every method and job that needs them.

A prompt label of one source domain is a function of that domain's train and val samples (keys,
versions, labels), the train views, the backbone (fingerprint, precision, device type), the class
list, the prompt learner and its options (seed included) and promptgen's version. Those values,
hashed, name the label in ``<cache root>/prompt-labels/<hash>/``; a run whose stage I computes the
same thing loads it instead of training again (``spg-cgan``, ``spg-cvae``, ``spg-diffusion`` and any
plugin's ``spg-<generator>`` of one target and seed share their CoOp labels). The label's metadata
says where it came from (``stage1_store``), which the run directory records. Labels are written
atomically; an unreadable one is trained again and replaced. Every fit runs under a forked RNG, so a
run continues with the same global random state whether its labels were trained or loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import attrs
import torch

from promptgen import __version__
from promptgen.components.run_values import RunValues
from promptgen.toolkit.checkpoints import load_prompt_label, save_prompt_label
from promptgen.toolkit.device import cuda_devices
from promptgen.paths import cache_root

log = logging.getLogger(__name__)


def label_key(run, learner: str, domain: str, train_samples, val_samples) -> str:
    """The hash of everything the label of ``domain`` depends on."""
    options = {k: v for k, v in run.options("prompt_learner", learner).items() if k not in RunValues.NOT_IDENTITY}
    backbone = run.config.backbone
    identity = {
        "promptgen": __version__, "learner": learner, "options": options, "domain": domain,
        "classes": list(run.classes), "views": run.views, "epoch": run.epoch, "fingerprint": run.backbone.fingerprint,
        "precision": backbone.precision, "device": run.backbone.device.type if hasattr(run.backbone, "device") else "",
        "train": [(s.key, s.version, s.label) for s in train_samples],
        "val": [(s.key, s.version, s.label) for s in val_samples],
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def store_dir(cache_dir: str | None) -> Path:
    return cache_root(cache_dir) / "prompt-labels"


def fetch_or_fit(run, key: str, fit):
    """The stored label named ``key``, or ``fit()``'s, stored; its metadata records which."""
    if not run.reuse_labels:  # a cost measurement: every label trained (benchmarks/method_costs.py)
        with torch.random.fork_rng(devices=cuda_devices()):
            return fit()
    folder = store_dir(run.config.cache_dir) / key
    stem = folder / "label"
    if folder.exists() and not stem.with_suffix(".json").is_file():
        shutil.rmtree(folder, ignore_errors=True)  # not a whole label (written by hand, or damaged): replaced
    if stem.with_suffix(".json").is_file():
        try:
            label = load_prompt_label(stem)
            if label.fingerprint == run.backbone.fingerprint and tuple(label.class_names) == tuple(run.classes):
                metadata = {**label.metadata, "stage1_store": {"key": key, "reused": True, "from": str(folder)}}
                return attrs.evolve(label, metadata=metadata)
        except Exception as error:  # a damaged entry is trained again and replaced, never trusted
            log.warning("stored prompt label %s is unreadable (%s); training it again", folder, error)
        shutil.rmtree(folder, ignore_errors=True)
    with torch.random.fork_rng(devices=cuda_devices()):
        label = fit()
    _store(label, folder)
    return attrs.evolve(label, metadata={**label.metadata,
                                         "stage1_store": {"key": key, "reused": False, "from": str(folder)}})


def _store(label, folder: Path) -> None:
    """Write the label beside its final place, then move it there: a reader sees a whole label or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_prompt_label(label, partial / "label")
    try:
        os.replace(partial, folder)
    except OSError:  # another job stored the same label meanwhile: theirs is as good
        shutil.rmtree(partial, ignore_errors=True)
