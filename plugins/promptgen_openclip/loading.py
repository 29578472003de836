"""Building open_clip models from a pretrained tag, a local checkpoint file, or random weights.

A tag whose weights are not cached and whose host cannot be reached fails in seconds with a
message that says how to pass a local file, instead of open_clip's retries (about a minute).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch

from promptgen.toolkit import BackboneLoadError
from promptgen_openclip.torchscript import read_torchscript_state_dict

CONFIG_DIR = Path(__file__).parent / "model_configs"
_configs_added = False


def add_tiny_configs() -> None:
    """Make the project's tiny model configs (pg-tiny-*) known to open_clip."""
    global _configs_added
    if not _configs_added:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _configs_added = True


def load_model(name: str, pretrained: str | None, *, cache_dir: str | None = None, init_seed: int = 0):
    """An open_clip model in eval mode on the CPU, fp32."""
    import open_clip

    add_tiny_configs()
    if name.startswith(("hf-hub:", "local-dir:")):
        return _create(name, None, cache_dir)
    if name.replace("/", "-") not in open_clip.list_models():
        raise BackboneLoadError(
            f"unknown open_clip model '{name}'; see open_clip.list_models() "
            f"(tiny test models: {', '.join(m for m in open_clip.list_models() if m.startswith('pg-tiny'))})"
        )
    if pretrained is None:
        # Random weights, reproducible for a seed (tests and the project's own tiny models).
        with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
            torch.manual_seed(init_seed)
            return _create(name, None, cache_dir)
    path = Path(pretrained).expanduser()
    if path.exists() or os.sep in pretrained or path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        return _load_file(name, path)
    return _load_tag(name, pretrained, cache_dir)


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip warns on the root logger that weights are random; here that is what was asked for."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _create(name: str, pretrained: str | None, cache_dir: str | None):
    import open_clip

    try:
        # weights_only: open_clip's default today, said here so that no upgrade can make a checkpoint run code
        return open_clip.create_model(name, pretrained=pretrained, cache_dir=cache_dir, device="cpu",
                                      weights_only=True)
    except Exception as error:  # open_clip signals bad files with asserts, KeyErrors, RuntimeErrors...
        raise BackboneLoadError(f"open_clip could not build '{name}' (pretrained={pretrained!r}): {error}") from None


def not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a checkpoint file (missing, a directory, a FIFO or device), else None. Checked
    before anything opens it: reading a FIFO would wait for a writer forever."""
    if path.is_dir():
        return f"--pretrained {path} is a directory, not a checkpoint file: pass the weights file inside it"
    if path.exists() and not path.is_file():
        return (f"--pretrained {path} is not a regular file (a FIFO, socket or device): pass a checkpoint file "
                f"(.safetensors, an open_clip state dict or an OpenAI .pt)")
    if not path.exists():
        return f"checkpoint file not found: {path}"
    return None


def _load_file(name: str, path: Path):
    problem = not_a_checkpoint(path)
    if problem:
        raise BackboneLoadError(problem)
    if _is_torchscript(path):
        return _load_openai_torchscript(path)
    try:
        return _create(name, str(path), None)
    except BackboneLoadError as error:
        raise BackboneLoadError(
            f"{path}: could not load as an open_clip checkpoint for '{name}' "
            f"(a state dict, a .safetensors file or an OpenAI .pt): {error}"
        ) from None


def _load_openai_torchscript(path: Path):
    """OpenAI's released .pt files are TorchScript archives: rebuild the CLIP their weights describe (read as data:
    promptgen_openclip.torchscript)."""
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import build_model_from_openai_state_dict

    try:
        # Read as data, never with torch.jit.load: that would compile and run the archive's code.
        state_dict = read_torchscript_state_dict(path)
        # Scripted open_clip models also carry the causal mask; CLIP rebuilds it.
        state_dict = {key: value for key, value in state_dict.items() if key != "attn_mask"}
        model = build_model_from_openai_state_dict(state_dict, cast_dtype=torch.float32).float()
    except Exception as error:
        raise BackboneLoadError(f"{path}: not a loadable OpenAI CLIP TorchScript archive: {error}") from None
    model.visual.image_mean = OPENAI_DATASET_MEAN
    model.visual.image_std = OPENAI_DATASET_STD
    return model


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.endswith("constants.pkl") or "/code/" in entry for entry in archive.namelist())


def _load_tag(name: str, tag: str, cache_dir: str | None):
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    key = name.replace("/", "-")
    cfg = get_pretrained_cfg(key, tag)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(key)) or "none"
        raise BackboneLoadError(
            f"'{tag}' is neither a pretrained tag of open_clip model '{name}' nor an existing file; tags: {tags}"
        )
    if not _is_cached(cfg, cache_dir):
        _require_host(name, tag, cfg)
    return _create(name, tag, cache_dir)


def _is_cached(cfg: dict, cache_dir: str | None) -> bool:
    if cfg.get("file"):
        return True
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        repo, filename = os.path.split(cfg["hf_hub"])  # 'org/repo/file' or 'org/repo/'
        names = [filename] if filename else ["open_clip_pytorch_model.bin"]
        names += [n.rsplit(".", 1)[0] + ".safetensors" for n in names]
        names.append("open_clip_model.safetensors")
        return any(isinstance(try_to_load_from_cache(repo, n, cache_dir=cache_dir), str) for n in names)
    url = cfg.get("url", "")
    folder = Path(cache_dir or "~/.cache/clip").expanduser()
    return bool(url) and (folder / os.path.basename(url)).is_file()


def _require_host(name: str, tag: str, cfg: dict, timeout: float = 5.0) -> None:
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname
    advice = (
        f"Download the weights where you have internet access and pass the file instead: "
        f"--model {name} --pretrained /path/to/weights (.safetensors, an open_clip state dict, or an OpenAI .pt)"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" and cfg.get("hf_hub"):
        raise BackboneLoadError(f"pretrained weights '{tag}' for '{name}' are not cached and HF_HUB_OFFLINE=1. {advice}")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise BackboneLoadError(
            f"cannot download pretrained weights '{tag}' for '{name}': {host} is unreachable ({error}). {advice}"
        ) from None

