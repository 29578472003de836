"""Saving and loading prompt labels and generators: tensors as .safetensors, everything else as JSON beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from promptgen.errors import PromptgenError
from promptgen.files import read_json, write_json
from promptgen.toolkit.values import PromptLabel


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_prompt_label(label: PromptLabel, path: str | Path) -> Path:
    """Write ``<path>.safetensors`` (the context) and ``<path>.json`` (fingerprint, domain, classes, metadata)."""
    tensors, meta = _paths(path)
    tensors.parent.mkdir(parents=True, exist_ok=True)
    save_file({"ctx": label.ctx.detach().cpu().contiguous()}, tensors)
    write_json(meta, {
        "fingerprint": label.fingerprint, "domain": label.domain, "class_names": list(label.class_names),
        "n_ctx": label.n_ctx, "ctx_dim": label.ctx_dim, "metadata": label.metadata,
    })
    return tensors


def load_prompt_label(path: str | Path) -> PromptLabel:
    tensors, meta = _paths(path)
    for file in (tensors, meta):
        if not file.is_file():
            raise PromptgenError(f"prompt label file missing: {file}")
    info = read_json(meta, "prompt label")
    return PromptLabel(
        ctx=load_file(tensors)["ctx"], fingerprint=info["fingerprint"], domain=info["domain"],
        class_names=info["class_names"], metadata=info.get("metadata", {}),
    )


def save_generator(generator: Any, name: str, options: dict, path: str | Path) -> Path:
    """The generator's tensor state as safetensors; its registered name and build options as JSON."""
    tensors, meta = _paths(path)
    tensors.parent.mkdir(parents=True, exist_ok=True)
    state = generator.state_dict()
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise PromptgenError(f"generator '{name}': state_dict must hold tensors only; not tensors: {', '.join(bad)}")
    save_file({key: value.detach().cpu().contiguous() for key, value in state.items()}, tensors)
    write_json(meta, {"generator": name, "options": {k: v for k, v in options.items() if k != "progress"}})
    return tensors


def load_generator(path: str | Path, registry=None) -> tuple[Any, str, dict]:
    """Rebuild a saved generator through the registry: (generator, name, options). Progress bars off."""
    from promptgen.components.registry import default_registry

    registry = registry or default_registry()
    tensors, meta = _paths(path)
    for file in (tensors, meta):
        if not file.is_file():
            raise PromptgenError(f"generator checkpoint file missing: {file}")
    info = read_json(meta, "generator checkpoint")
    options = dict(info["options"])
    if "progress" in registry.get("generator", info["generator"]).options:
        options["progress"] = False
    generator = registry.create("generator", info["generator"], **options)
    generator.load_state_dict(load_file(tensors))
    return generator, info["generator"], info["options"]


def check_fingerprint(label: PromptLabel, backbone, where: Path) -> None:
    """A prompt label belongs to the backbone it was learned on: refuse it for any other."""
    if label.fingerprint != backbone.fingerprint:
        raise PromptgenError(f"{where}: learned on backbone {label.fingerprint}, but the backbone now loads as "
                             f"{backbone.fingerprint}; pass the same weights")


def save_labels_and_generator(directory: str | Path, labels, generator: Any, name: str, options: dict, *,
                              labels_dir: str = "prompt_labels", generator_dir: str = "generator") -> None:
    """A two-stage method's state: one prompt label per source domain under ``labels_dir/<domain>`` and its
    generator under ``generator_dir`` (SPG's layout; DPSPG saves one such pair per path)."""
    for label in labels:
        save_prompt_label(label, Path(directory) / labels_dir / label.domain)
    save_generator(generator, name, options, Path(directory) / generator_dir)


def load_labels_and_generator(directory: str | Path, run, *, labels_dir: str = "prompt_labels",
                              generator_dir: str = "generator") -> tuple[list[PromptLabel], Any, str, dict]:
    """What :func:`save_labels_and_generator` wrote, for ``run``'s sources, each label checked against the run's
    backbone: (labels, generator, its name, its options)."""
    folder = Path(directory) / labels_dir
    labels = [load_prompt_label(folder / domain) for domain in run.sources]
    for label, domain in zip(labels, run.sources):
        check_fingerprint(label, run.backbone, folder / domain)
    generator, name, options = load_generator(Path(directory) / generator_dir, run.registry)
    return labels, generator, name, options
