"""The weights of a TorchScript archive (OpenAI's released CLIP .pt files), read without running anything in it.

``torch.jit.load`` compiles the archive's code and unpickles its objects, so a crafted file runs what its
author chose; ``torch.load(weights_only=True)`` refuses TorchScript archives outright. This reader opens
the zip, unpickles ``data.pkl`` with an unpickler that can build only tensors and plain containers
(Python's documented way to restrict globals: https://docs.python.org/3/library/pickle.html#restricting-globals),
and reads which attributes are parameters and buffers from the class declarations in ``code/``
(parsed with ``ast``, never executed). The result is what ``torch.jit.load(path).state_dict()`` returns.
"""

from __future__ import annotations

import ast
import collections
import io
import pickle
import zipfile
from pathlib import Path

import torch

# Storage classes name a dtype in a tensor's persistent id; these are the ones TorchScript writes.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# TorchScript's list/dict builders (torch.jit._pickle): each only wraps its argument.
_JIT_BUILDERS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_genericlist")


class UnsafeArchiveError(ValueError):
    """The archive names something this reader will not build (it could run code), or is not an archive."""


class _ScriptObject:
    """A TorchScript module as data: its qualified class name and its attributes (set by the pickle's BUILD)."""

    qualified_name = ""


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None, *_):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _restore_type_tag(value, _type_string):
    return value


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, where: Path):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.where = archive, prefix, where
        self.script_classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.script_classes:
                self.script_classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self.script_classes[qualified]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name in _JIT_BUILDERS:
            return list
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return _restore_type_tag
        raise UnsafeArchiveError(f"{self.where}: the archive's data.pkl names {module}.{name}, which a weights file "
                                 f"does not need; refusing to load it (only tensors and modules' attributes are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise UnsafeArchiveError(f"{self.where}: unexpected persistent id {pid!r} in data.pkl")
        dtype, key = pid[1], str(pid[2])
        try:
            raw = self.archive.read(f"{self.prefix}data/{key}")
        except KeyError:
            raise UnsafeArchiveError(f"{self.where}: data.pkl refers to storage {key}, which the archive lacks") from None
        return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _declared_state(archive: zipfile.ZipFile, prefix: str, qualified: str) -> tuple[list[str], list[str]]:
    """The ``__parameters__`` and ``__buffers__`` a class of ``code/`` declares (read with ast, never run)."""
    module, _, name = qualified.rpartition(".")
    source_name = f"{prefix}code/{module.replace('.', '/')}.py"
    try:
        tree = ast.parse(archive.read(source_name).decode("utf-8"))
    except (KeyError, SyntaxError, UnicodeDecodeError) as error:
        raise UnsafeArchiveError(f"cannot read the declaration of {qualified} ({source_name}): {error}") from None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            declared = {"__parameters__": [], "__buffers__": []}
            for statement in node.body:
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                    target = statement.targets[0]
                    if isinstance(target, ast.Name) and target.id in declared:
                        declared[target.id] = list(ast.literal_eval(statement.value))
            return declared["__parameters__"], declared["__buffers__"]
    raise UnsafeArchiveError(f"{source_name} declares no class {name}")


def _collect(obj: _ScriptObject, prefix: str, archive, code_prefix: str, out: dict, seen: set) -> None:
    if id(obj) in seen:  # a module reached twice (a crafted cycle, or a shared submodule): its state is in once
        return
    seen.add(id(obj))
    parameters, buffers = _declared_state(archive, code_prefix, obj.qualified_name)
    for attribute, value in vars(obj).items():
        if isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{attribute}.", archive, code_prefix, out, seen)
        elif attribute in parameters or attribute in buffers:
            if isinstance(value, torch.Tensor):  # an unset optional parameter (a bias of None) is not state
                out[f"{prefix}{attribute}"] = value


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.jit.load(path).state_dict()`` for a TorchScript archive, computed without executing it."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnsafeArchiveError(f"{path}: not a TorchScript archive (a zip file): {error}") from None
    with archive:
        data_names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(data_names) != 1:
            raise UnsafeArchiveError(f"{path}: expected one <name>/data.pkl in the archive, found {len(data_names)}")
        prefix = data_names[0][: -len("data.pkl")]
        byteorder = archive.read(f"{prefix}byteorder").decode().strip() if f"{prefix}byteorder" in archive.namelist() \
            else "little"
        if byteorder != "little":
            raise UnsafeArchiveError(f"{path}: a {byteorder}-endian archive; only little-endian ones are read")
        try:
            root = _WeightsUnpickler(archive.read(data_names[0]), archive, prefix, path).load()
        except UnsafeArchiveError:
            raise
        except Exception as error:  # a truncated or garbled pickle
            raise UnsafeArchiveError(f"{path}: damaged data.pkl: {type(error).__name__}: {error}") from None
        if not isinstance(root, _ScriptObject):
            raise UnsafeArchiveError(f"{path}: data.pkl holds a {type(root).__name__}, not a TorchScript module")
        state: dict[str, torch.Tensor] = {}
        _collect(root, "", archive, prefix, state, set())
    return state
