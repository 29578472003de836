"""No code runs from a file a user points promptgen at: checkpoints, weights and archives are read as data.

Each planted file carries a pickle that, if unpickled, would create a marker file; the tests prove the
marker never appears. A scan of the tree fails on any new pickle-capable load.
"""

from __future__ import annotations

import ast
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from promptgen import cli
from promptgen.errors import BackboneLoadError, PromptgenError
from promptgen.toolkit import load_training_state, save_training_state

ROOT = Path(__file__).resolve().parents[1]
TINY_LIT = ["--text-only", "--steps", "2", "--batch-size", "16", "--pool-size", "48"]


class _RunsACommand:
    """Unpickling this runs a shell command: what a crafted checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted_pickle(marker: Path) -> bytes:
    return pickle.dumps({"config": _RunsACommand(marker)}, protocol=2)


def test_the_crafted_pickle_does_run_code_when_unpickled(tmp_path):
    # the control: the planted files below are real exploits, so their markers' absence means something
    marker = tmp_path / "ran"
    pickle.loads(_crafted_pickle(marker))
    assert marker.exists()


def test_a_planted_checkpoint_in_world_pretrain_out_runs_nothing(tmp_path, capsys):
    marker, out = tmp_path / "ran", tmp_path / "out"
    out.mkdir()
    (out / "lit-checkpoint.safetensors").write_bytes(_crafted_pickle(marker))
    (out / "tiny-clip-digits.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    code = cli.main(["world", "pretrain", *TINY_LIT, "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists(), err
    assert f"{out / 'lit-checkpoint.safetensors'}: not a readable training checkpoint" in err
    # what --out holds is named before anything starts, and nothing of it is lost
    assert f"{out} already holds tiny-clip-digits.json: this run replaces it when it finishes" in err
    assert f"{out} also holds notes.txt: left as it is" in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "tiny-clip-digits.json").read_text() == "{}"


def test_an_old_pickle_checkpoint_is_named_and_never_opened(tmp_path, capsys):
    from promptgen_digits.lit import LitConfig, train_text_tower

    marker, out = tmp_path / "ran", tmp_path / "out"
    out.mkdir()
    (out / "lit-checkpoint.pt").write_bytes(_crafted_pickle(marker))
    config = LitConfig(steps=4, batch_size=16, warmup_steps=1, pool_size=48, checkpoint_every=1)
    assert train_text_tower(config, out, cache_dir=tmp_path / "cache", progress=True, stop_after=1) is None
    assert not marker.exists()
    assert "lit-checkpoint.pt is a checkpoint of an older promptgen (a pickle); it is not read" in capsys.readouterr().err
    assert (out / "lit-checkpoint.safetensors").exists()  # the new checkpoint: tensors and JSON


def test_world_pretrain_refuses_zero_steps_in_one_line(tmp_path, capsys):
    for flags, message in ((["--steps", "0"], "--steps must be an integer >= 1, got 0"),
                           (["--steps", "-5"], "--steps must be an integer >= 1, got -5"),
                           (["--pool-size", "0"], "--pool-size must be an integer >= 2, got 0")):
        for edition in (["--text-only"], []):
            assert cli.main(["world", "pretrain", *edition, *flags, "--out", str(tmp_path / "out")]) == 2
            assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _torchscript_zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", data_pkl)
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("evil/code/__torch__.py", "class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n")
        archive.writestr("evil/version", "3\n")
    return path


def test_a_crafted_torchscript_archive_as_pretrained_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = _torchscript_zip(tmp_path / "ViT-evil.pt", _crafted_pickle(marker))
    code = cli.main(["backbone", "--backbone", "openclip", "--model", "pg-tiny-vit-w64", "--pretrained", str(evil)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(evil) in err and "system, which a weights file does not need; refusing to load it" in err


def test_a_crafted_pickle_state_dict_as_pretrained_runs_nothing(tmp_path):
    from promptgen_openclip.backbone import OpenClipBackbone

    marker = tmp_path / "ran"
    torch.save({"state_dict": _RunsACommand(marker)}, tmp_path / "evil.pt")
    (tmp_path / "legacy.pt").write_bytes(_crafted_pickle(marker))  # the pre-zip torch.save format: a bare pickle
    for name in ("evil.pt", "legacy.pt"):
        with pytest.raises(BackboneLoadError, match=f"{tmp_path / name}: could not load"):
            OpenClipBackbone("pg-tiny-vit-w64", pretrained=str(tmp_path / name))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated; OpenAI's files are TorchScript
def test_an_openai_archive_is_read_as_data_exactly_as_torch_jit_would(tmp_path, monkeypatch):
    import open_clip

    from promptgen_openclip.backbone import OpenClipBackbone
    from promptgen_openclip.loading import add_tiny_configs
    from promptgen_openclip.torchscript import read_torchscript_state_dict

    add_tiny_configs()
    source = open_clip.create_model("pg-tiny-vit-w64", force_quick_gelu=True).eval()
    torch.jit.save(torch.jit.script(source), tmp_path / "ViT-tiny.pt")
    expected = torch.jit.load(tmp_path / "ViT-tiny.pt").state_dict()
    got = read_torchscript_state_dict(tmp_path / "ViT-tiny.pt")
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) and got[k].dtype == expected[k].dtype
               and got[k].stride() == expected[k].stride() for k in expected)

    def no_jit(*_args, **_kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    OpenClipBackbone("pg-tiny-vit-w64", pretrained=str(tmp_path / "ViT-tiny.pt"))  # builds without torch.jit.load

    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(tmp_path / "ViT-tiny.pt") as archive, zipfile.ZipFile(damaged, "w") as out:
        for entry in archive.namelist():
            data = archive.read(entry)
            out.writestr(entry, data[: len(data) // 2] if entry.endswith("data.pkl") else data)
    with pytest.raises(BackboneLoadError, match=f"{damaged}: .*damaged data.pkl"):
        OpenClipBackbone("pg-tiny-vit-w64", pretrained=str(damaged))


def test_a_training_state_round_trips_and_a_damaged_one_is_named(tmp_path):
    def model_and_optimizer():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))

    def step(model, optimizer):
        optimizer.zero_grad()
        model(torch.ones(5, 3)).pow(2).sum().backward()
        optimizer.step()

    model, optimizer = model_and_optimizer()
    step(model, optimizer)
    path = save_training_state(tmp_path / "state.safetensors", model=model, optimizer=optimizer,
                               meta={"step": 1, "losses": [0.5, float("nan")]})
    restored, restored_optimizer = model_and_optimizer()
    meta = load_training_state(path, model=restored, optimizer=restored_optimizer)
    assert meta == {"step": 1, "losses": [0.5, None]}  # strict JSON: NaN is written as null
    step(model, optimizer)
    step(restored, restored_optimizer)  # the next step is the same: weights, moments, step counts, betas
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))

    with pytest.raises(ValueError, match="not this run"):  # `accept` refuses before anything is loaded
        load_training_state(path, model=restored, optimizer=restored_optimizer,
                            accept=lambda meta: (_ for _ in ()).throw(ValueError("not this run")))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PromptgenError, match=f"{path}: not a readable training checkpoint"):
        load_training_state(path, model=restored, optimizer=restored_optimizer)


# --- the scan: no pickle-capable load anywhere in the shipped code -----------------------------------------

_PICKLE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve", "_pickle"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "not a constant"
    return None


def pickle_capable_loads(source: str) -> list[str]:
    """Each call in ``source`` that could unpickle (and so run code): the line and why."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith("Unpickler") for b in node.bases):
            if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                found.append(f"line {node.lineno}: an Unpickler subclass without a restricting find_class")
        if not isinstance(node, ast.Call):
            continue
        name, line = _dotted(node.func), f"line {node.lineno}: "
        root, _, leaf = name.rpartition(".")
        if root.split(".")[-1] in _PICKLE_MODULES and leaf in ("load", "loads", "open", "Unpickler"):
            found.append(line + name)
        elif name.endswith("jit.load"):
            found.append(line + name + " (compiles and runs the archive's code)")
        elif name.endswith("torch.load") and _keyword(node, "weights_only") is not True:
            found.append(line + name + " without weights_only=True")
        elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
            found.append(line + name + " without allow_pickle=False")
        if _keyword(node, "weights_only") is False:
            found.append(line + "weights_only=False")
    return found


def test_the_scan_finds_every_kind_of_pickle_capable_load():
    bad = """
import pickle, torch, numpy as np, cloudpickle
pickle.load(f); pickle.loads(b); cloudpickle.loads(b); torch.load(p); torch.load(p, weights_only=False)
torch.jit.load(p); np.load(p); np.load(p, allow_pickle=True); anything(p, weights_only=False)
class U(pickle.Unpickler):
    pass
"""
    assert len(pickle_capable_loads(bad)) == 11  # torch.load(p, weights_only=False) is found twice
    good = "torch.load(p, weights_only=True); np.load(p, allow_pickle=False); pickle.dumps(x)\n" \
           "class R(pickle.Unpickler):\n    def find_class(self, module, name): raise ValueError\n"
    assert pickle_capable_loads(good) == []


def test_no_shipped_code_loads_a_pickle():
    found = []
    for folder in ("promptgen", "benchmarks", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += [f"{path.relative_to(ROOT)} {where}" for where in pickle_capable_loads(path.read_text())]
    assert found == [], "pickle-capable loads (a file a user points at could run code):\n" + "\n".join(found)
