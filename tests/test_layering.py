"""The core's layers (docs/architecture.md, "Where each thing lives"): foundations <- components <- toolkit <-
storage <- runs <- cli, each importing only the layers before it. Every import counts: at module level, inside a
function, under ``if TYPE_CHECKING:``, and a module named by a string (the toolkit facade's re-exports, an
``importlib.import_module`` or ``lazy("module:Class")`` target). Nothing in the core imports the package's face
(``promptgen/__init__.py``, ``__main__.py``), and no module imports itself back through others."""

from __future__ import annotations

import ast
import re
from pathlib import Path

LAYERS = ("foundations", "components", "toolkit", "storage", "runs", "cli", "face")
_MODULE_NAMED = re.compile(r"^[A-Za-z_]\w*(\.\w+)+(:[\w.]+)?$")  # "pkg.module" or "pkg.module:Attribute"


def core_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (found under ``root``) by its dotted name; a package by its own name."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def layer(module: str, package: str) -> str:
    """The layer a module of ``package`` belongs to: its subpackage's, else the foundations (``package.errors``); the
    package itself and its ``__main__`` are its face, above everything."""
    if module in (package, f"{package}.__main__"):
        return "face"
    parts = module.split(".")
    return parts[1] if parts[1] in LAYERS else "foundations"


def own_values(root: Path, package: str) -> set[str]:
    """The names the package's ``__init__`` assigns itself (``__version__``): the package's own values, which any
    layer may read, unlike what the face re-exports from its layers."""
    tree = ast.parse((root / package / "__init__.py").read_text(encoding="utf-8"))
    return {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def imports(path: Path, module: str, modules: dict[str, Path], own: set[str] = frozenset()) -> list[tuple[str, int]]:
    """(module imported, line) for every import of a module in ``modules`` that ``path`` makes, anywhere in it;
    ``from package import name`` of one of the package's ``own`` values is none."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]  # what a relative import starts from
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # ``from pkg import module`` imports that module, else pkg itself
                if f"{base}.{alias.name}" in modules:
                    found.append((f"{base}.{alias.name}", node.lineno))
                elif not ("." not in base and alias.name in own):
                    found.append((base, node.lineno))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and _MODULE_NAMED.match(node.value)):
            found.append((node.value.split(":")[0], node.lineno))
    known = []
    for name, line in found:  # "pkg.module.Attribute" (a string's target) is pkg.module
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            known.append((name, line))
    return known


def upward_imports(root: Path, package: str = "promptgen") -> list[str]:
    """Each import of a later layer (or of the face) by a module of ``package``, as a line naming both."""
    modules, own = core_modules(root, package), own_values(root, package)
    upward = []
    for module, path in modules.items():
        for name, line in imports(path, module, modules, own):
            if LAYERS.index(layer(name, package)) > LAYERS.index(layer(module, package)):
                upward.append(f"{module} ({layer(module, package)}, line {line}) imports {name} "
                              f"({layer(name, package)})")
    return upward


def import_circles(root: Path, package: str = "promptgen") -> list[list[str]]:
    """The groups of modules of ``package`` that import one another round a circle (Tarjan's strongly connected
    components of more than one module), each sorted."""
    modules, own = core_modules(root, package), own_values(root, package)
    graph = {module: {name for name, _ in imports(path, module, modules, own)} for module, path in modules.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for name in graph[module]:
            if name not in index:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in on_stack:
                low[module] = min(low[module], index[name])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                circles.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return circles


ROOT = Path(__file__).parent.parent


def test_each_core_layer_imports_only_the_layers_before_it():
    upward = upward_imports(ROOT)
    assert not upward, "\n".join(upward)


def test_no_core_module_imports_itself_back_through_others():
    circles = import_circles(ROOT)
    assert not circles, "\n".join(" <-> ".join(circle) for circle in circles)


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "pkg/__init__.py": "from pkg.components.thing import Thing\n\n__version__ = '1.0'\n",
    "pkg/__main__.py": "from pkg.cli import main\n",
    "pkg/errors.py": '"""Errors: pkg.cli.render shows them (a docstring names no import)."""\nimport os\n',
    "pkg/components/__init__.py": "",
    "pkg/components/thing.py": "from pkg.errors import os\n\nclass Thing:\n    pass\n",
    "pkg/toolkit/__init__.py": '_EXPORTS = {"pkg.components.thing": ("Thing",)}\n',
    "pkg/cli/__init__.py": "from .render import main\n",
    "pkg/cli/render.py": ("from ..components import thing\nfrom pkg import __version__\n\n"
                          "def main():\n    from pkg import errors\n"),
}


def test_a_clean_tree_passes(tmp_path):
    root = _plant(tmp_path, CLEAN)
    assert upward_imports(root, "pkg") == [] and import_circles(root, "pkg") == []


def test_an_upward_import_of_any_kind_is_found(tmp_path):
    """One planted upward import of each kind: in a function, under TYPE_CHECKING, relative, a facade's string, a
    lazy target, and the package's face imported from inside the core."""
    root = _plant(tmp_path, {**CLEAN,
        "pkg/errors.py": "def describe(error):\n    from pkg.cli.render import main\n",
        "pkg/components/thing.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.toolkit\n",
        "pkg/components/more.py": "from ..cli import render\n",
        "pkg/toolkit/__init__.py": '_EXPORTS = {"pkg.cli.render": ("main",)}\n',
        "pkg/toolkit/plugin.py": 'target = lazy("pkg.cli.render:main")\n',
        "pkg/cli/render.py": "from pkg import Thing\n",
    })
    found = upward_imports(root, "pkg")
    assert found == [
        "pkg.cli.render (cli, line 1) imports pkg (face)",
        "pkg.components.more (components, line 1) imports pkg.cli.render (cli)",
        "pkg.components.thing (components, line 3) imports pkg.toolkit (toolkit)",
        "pkg.errors (foundations, line 2) imports pkg.cli.render (cli)",
        "pkg.toolkit (toolkit, line 1) imports pkg.cli.render (cli)",
        "pkg.toolkit.plugin (toolkit, line 1) imports pkg.cli.render (cli)",
    ], found


def test_a_circle_inside_one_layer_is_found(tmp_path):
    root = _plant(tmp_path, {**CLEAN,
        "pkg/components/a.py": "def f():\n    from pkg.components import b\n",
        "pkg/components/b.py": "from pkg.components.a import f\n"})
    assert upward_imports(root, "pkg") == []
    assert import_circles(root, "pkg") == [["pkg.components.a", "pkg.components.b"]]
