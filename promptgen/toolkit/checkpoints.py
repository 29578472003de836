"""Saving and loading prompt labels, generators and training states: tensors as .safetensors, everything else as
JSON (beside them, or in the file's header). Nothing here unpickles, so no file a user points promptgen at runs code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from promptgen.errors import ConfigError, PromptgenError
from promptgen.files import atomic_file, dumps, read_json, write_json
from promptgen.values import PromptLabel


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


def save_training_state(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        meta: dict) -> Path:
    """A resumable training state in one ``.safetensors`` file, written atomically: the model's and the
    optimizer's tensors, and ``meta`` plus the optimizer's other settings as JSON in the file's header.

    Never a pickle: loading it back (:func:`load_training_state`) reads tensors and JSON, so a file a user
    hands promptgen cannot run code."""
    from safetensors.torch import save

    optimizer_state = optimizer.state_dict()
    tensors = {f"model.{key}": value for key, value in model.state_dict().items()}
    scalars: dict[str, dict] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    header = {"meta": meta, "param_groups": optimizer_state["param_groups"], "optimizer_scalars": scalars}
    # copies: safetensors refuses tensors that share memory (tied weights)
    tensors = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}
    with atomic_file(path, "wb") as file:
        file.write(save(tensors, metadata={"promptgen": dumps(header)}))
    return Path(path)


def load_training_state(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        accept: Callable[[dict], None] | None = None) -> dict:
    """Restore what :func:`save_training_state` wrote into ``model`` and ``optimizer``; return its ``meta``.
    ``accept(meta)`` runs first and may refuse (raise) before anything is loaded: a checkpoint of another run.
    A damaged or foreign file is refused naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as file:
            header = json.loads((file.metadata() or {})["promptgen"])
            if accept is not None:
                accept(header["meta"])
            tensors = {key: file.get_tensor(key) for key in file.keys()}
        optimizer_state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                index, name = key[len("optimizer."):].split(".", 1)
                optimizer_state.setdefault(int(index), {})[name] = value
        for index, values in header["optimizer_scalars"].items():
            optimizer_state.setdefault(int(index), {}).update(values)
        groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group
                  for group in header["param_groups"]]
        model.load_state_dict({key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")})
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
        return header["meta"]
    except PromptgenError:  # ``accept`` refused it: its own words
        raise
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"{path}: not a readable training checkpoint ({type(error).__name__}: {error}); delete it "
                             f"to start afresh") from None
