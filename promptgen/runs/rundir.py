"""The run directory: what a run writes, where, and how it is read back.

    config.json    {"run": the RunConfig, "preset": cpu|gpu, "method": name, "components": [[kind, name]...],
                    "options": {"<kind>/<name>": resolved options}}
    <method files> whatever the method's ``save`` writes (prompt labels, generator, ...)
    metrics.json   accuracies, stage seconds, sizes, the method's fit report, generator quality, versions
    history.json   the per-epoch history of the method's fit report, when it has one
    curves.png     those per-epoch losses and accuracies plotted (promptgen.runs.curves), when the run has any
    manifest.json  the run's id and every other file's size and hash: written last

A run writes into a temporary directory beside its ``--out`` (``.<name>.partial-<pid>-...``) and
moves it into place only when everything is written, so ``--out`` holds a whole run or nothing: a
run killed at any point leaves the previous directory (or none) as it was. A run directory that
exists is replaced only when asked (``--force``), and then whole. ``verify`` checks a directory
against its manifest before it is read. Every JSON file is written atomically and strictly.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path

from promptgen.runs import curves
from promptgen.runs.config import RunConfig, from_dict
from promptgen.errors import ConfigError, PromptgenError, RunDirectoryError
from promptgen.files import read_json, write_json

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.json"
MANIFEST = "manifest.json"
PARTIAL = ".partial-"
_CREATED: dict[Path, list[Path]] = {}


def start(out: Path, *, force: bool = False) -> Path:
    """A new, empty temporary directory beside ``out`` for the run to write into (see :func:`finish`).

    Refuses an ``out`` that is a file, and one that holds anything unless ``force``.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held:
        if not is_run(out):  # --force replaces a run, never a folder of someone's files
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise ConfigError(f"--out {out} is not empty and is not a run directory (it holds {shown}); promptgen "
                              f"replaces only a run it wrote, even with --force: choose another --out")
        if not force:
            raise ConfigError(f"--out {out} already holds a run; pass --force to replace it, or choose another --out")
    try:
        missing = [parent for parent in out.parents if not parent.exists()]
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(out)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL}{os.getpid()}-", dir=out.parent))
        _CREATED[work] = missing  # folders made for this run: a run that fails removes them again
        return work
    except FileExistsError:
        raise ConfigError(f"--out {out}: a parent of it is a file, not a directory") from None
    except NotADirectoryError:
        raise ConfigError(f"--out {out}: a parent of it is a file, not a directory") from None


def is_run(directory: Path) -> bool:
    """Whether ``directory`` is a run promptgen wrote: it has the manifest written last, or (a run of a promptgen
    before 0.2, which wrote no manifest) its config.json."""
    return (directory / MANIFEST).is_file() or (directory / CONFIG).is_file()


def _remove_stale_partials(out: Path) -> None:
    """Temporary directories of runs that were killed (their process is gone)."""
    for partial in out.parent.glob(f".{out.name}{PARTIAL}*"):
        pid = partial.name[len(f".{out.name}{PARTIAL}"):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish(work: Path, out: Path) -> None:
    """Write the manifest into ``work`` and move it into place as ``out`` (replacing a previous run whole)."""
    out = Path(out).absolute()
    write_json(work / MANIFEST, {"run_id": uuid.uuid4().hex, "files": _inventory(work)})
    _CREATED.pop(work, None)
    _put_in_place(work, out)


def _put_in_place(work: Path, out: Path) -> None:
    """Move the whole directory ``work`` to ``out``, replacing what is there (a previous run) whole."""
    if out.exists():
        replaced = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, replaced)
        os.replace(work, out)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.replace(work, out)


def archive(run_dir: Path) -> bytes:
    """A whole run directory as one gzip'd tar (paths relative to it): what travels back from a machine that does
    not share the disk of whoever wants the run (benchmarks.remote)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:  # weights barely compress; JSON does
        for path in sorted(Path(run_dir).rglob("*")):
            tar.add(path, arcname=path.relative_to(run_dir).as_posix(), recursive=False)
    return buffer.getvalue()


def unarchive(data: bytes, out: Path, where: str = "a run archive") -> None:
    """Write the run that :func:`archive` packed as ``out`` (replacing a run there whole), once it is unpacked
    beside it and verified against its manifest: ``out`` holds a whole run or what it held before. Only regular
    files and folders under ``out`` are accepted (tarfile's "data" filter); ``where`` names the archive's origin."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.incoming-", dir=out.parent))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(work, filter="data")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise RunDirectoryError(f"{where} cannot be unpacked ({type(error).__name__}: {error})") from None
        verify(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _put_in_place(work, out)


def discard(work: Path) -> None:
    """Remove a failed run's temporary directory, and the folders made for it that are still empty."""
    shutil.rmtree(work, ignore_errors=True)
    for folder in _CREATED.pop(work, []):  # nearest first
        try:
            folder.rmdir()
        except OSError:
            break


def _inventory(directory: Path) -> dict[str, dict]:
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        files[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "blake2b": digest.hexdigest()}
    return files


def verify(run_dir: Path) -> None:
    """A RunDirectoryError listing what is missing or changed, unless ``run_dir`` is whole and from one run."""
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is not a run directory (no such directory)")
    if not (run_dir / MANIFEST).is_file():
        raise RunDirectoryError(f"{run_dir} is not a complete run directory: {MANIFEST} is missing (an interrupted "
                                f"run, another tool's folder, or a run of a promptgen before 0.2); train it again")
    manifest = read_json(run_dir / MANIFEST, "run manifest")
    expected = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(expected, dict):
        raise RunDirectoryError(f"{run_dir / MANIFEST}: expected an object with a 'files' table")
    actual = _inventory(run_dir)
    missing = sorted(set(expected) - set(actual))
    changed = sorted(name for name in set(expected) & set(actual) if expected[name] != actual[name])
    if missing or changed:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"changed since the run wrote them: {', '.join(changed)}"] if changed else [])
        raise RunDirectoryError(f"{run_dir} is not one whole run ({'; '.join(parts)}); train it again")


def write_config(out: Path, config: RunConfig, checked, context) -> None:
    """config.json: the run's config, and every component's options as the resolver gave them (what the dry run
    prints: promptgen.components.resolve.resolved_components), under "<kind>/<name>"."""
    from promptgen.components.resolve import resolved_components

    table = resolved_components(context.registry, checked.every_component, context.settings,
                                context.run_values)
    options = {f"{kind}/{name}": values for kind, names in table.items() for name, values in names.items()}
    write_json(out / CONFIG, {"run": config.to_dict(), "preset": checked.preset, "method": checked.method_name,
                              "components": [list(pair) for pair in checked.components], "options": options})


def metrics(config: RunConfig, checked, context, scores: dict, report: dict, quality, versions: dict) -> dict:
    return {
        "dataset": config.dataset, "target_dataset": config.target_dataset or config.dataset,
        "sources": list(context.sources), "targets": list(context.targets), "classes": len(context.classes),
        "method": config.method, "components": {kind: name for kind, name in checked.components},
        "seed": config.seed, "preset": checked.preset, "fingerprint": context.backbone.fingerprint,
        "test_accuracy": {domain: scores[f"test/{domain}"] for domain in context.targets},
        "val_accuracy": scores["val"],
        "model_selection": "training-domain validation (val split of the source domains)",
        "seconds": dict(context.seconds),
        "sizes": {split: len(context.samples(split)) for split in ("train", *context.eval_splits)},
        "views": context.views,
        "epoch": context.epoch,
        "fit": fit_summary(report),
        "generator_quality": quality,
        "versions": versions,
    }


def fit_summary(report: dict) -> dict:
    """The method's report without its history (history.json keeps it), with the history's ``last_epoch``: beside
    ``best_epoch`` it says whether the loop kept its final epoch (source val still rising when the schedule ended)."""
    summary = {key: value for key, value in report.items() if key != "history"}
    history = report.get("history")
    epochs = [entry["epoch"] for entry in history if isinstance(entry, dict) and type(entry.get("epoch")) is int] \
        if isinstance(history, list) else []
    if epochs:
        summary["last_epoch"] = max(epochs)
    return summary


def write_metrics(out: Path, metrics: dict, history) -> None:
    write_json(out / METRICS, metrics)
    if history is not None:
        write_json(out / HISTORY, history)
    try:  # curves.png is only a view of the files above: a plot that fails must not lose the run
        curves.plot_curves(out)
    except Exception as error:
        logging.getLogger(__name__).warning("%s: could not plot the training curves: %s", out, error)


def load_config(run_dir: Path) -> RunConfig:
    """The RunConfig a run directory was made with (the directory verified first)."""
    verify(run_dir)
    saved = read_json(run_dir / CONFIG, "run config")
    if not isinstance(saved, dict) or not isinstance(saved.get("run"), dict):
        raise RunDirectoryError(f"{run_dir / CONFIG}: expected an object with a 'run' table")
    try:
        return from_dict(RunConfig, saved["run"])
    except PromptgenError as error:
        raise RunDirectoryError(f"{run_dir / CONFIG}: {error}") from None
