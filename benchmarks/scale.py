"""A scale dry run (suite kind "scale"): a generated tree of a real dataset's shape through every stage.

The suite file names the dataset plugin, its folder name and its domains with their real sizes; the
class folders are the plugin's own (``class_folders``, else ``classes``). It generates ``per_class`` small JPEGs per class and
domain under ``<out>/tree/<dir_name>/``, then runs what a user runs, each command in a new interpreter:

  data info      list and scan the tree (the image scan uses a process pool from 5,000 images)
  cache extract  every image through the backbone into the LMDB cache
  train          the suite's method with its preset and overrides (a short schedule), then inference
                 on the full held-out domain (every test image, one prompt per class each)

and reports per stage the wall time, the peak RSS of the command and the cache size, then projects
the real dataset from the rates measured here: images extracted per second, stage I steps per second,
images scored per second. The projection is for *this* backbone on *this* machine; a suite's
``scale.rates`` table (the same three rates, e.g. from a GPU check) projects another. The images are
noise: their accuracy means nothing. See docs/benchmarks.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.perf import measured_interpreter, promptgen_code
from promptgen.toolkit.epochs import steps_per_epoch
from promptgen.errors import ConfigError
from promptgen.files import write_json
from promptgen.components.registry import default_registry

SETTINGS = {"per_class": 12, "image_size": 32, "dir_name": None, "sizes": None, "val_fraction": 0.2,
            "project": {}, "rates": None}


def settings_of(suite) -> dict:
    unknown = set(suite.scale) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"{suite.path}: scale: unknown key(s) {sorted(unknown)}; keys: {', '.join(SETTINGS)}")
    settings = {**SETTINGS, **suite.scale}
    for key in ("dir_name", "sizes"):
        if not settings[key]:
            raise ConfigError(f"{suite.path}: scale.{key} is required (the dataset's folder name; its domains "
                              f"with their real image counts)")
    if not suite.targets or len(suite.targets) != 1 or suite.targets[0] not in settings["sizes"]:
        raise ConfigError(f"{suite.path}: targets: name one held-out domain of scale.sizes")
    if len(suite.methods) != 1 or suite.methods[0] == "all":
        raise ConfigError(f"{suite.path}: methods: name one method")
    return settings


def generate(root: Path, classes, domains, per_class: int, size: int) -> dict:
    """<root>/<domain>/<class>/<i>.jpg, each image random blocks of colour; reused when complete."""
    from PIL import Image

    done = root / ".complete"
    if done.exists() and json.loads(done.read_text()).get("per_class") == per_class:
        return json.loads(done.read_text())
    start, rng, files = time.perf_counter(), np.random.default_rng(0), 0
    for domain in domains:
        for name in classes:
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(blocks).resize((size, size), Image.NEAREST).save(folder / f"{i}.jpg", quality=90)
                files += 1
    made = {"per_class": per_class, "files": files, "seconds": time.perf_counter() - start,
            "bytes": sum(p.stat().st_size for p in root.rglob("*.jpg"))}
    done.write_text(json.dumps(made))
    return made


def command(argv: list[str]) -> dict:
    """``promptgen argv`` in a new interpreter: its wall time and peak RSS (VmHWM, as benchmarks.perf)."""
    measured = measured_interpreter(promptgen_code(argv), f"scale: promptgen {' '.join(argv)}")
    return {"seconds": measured["seconds"], "peak_rss_mb": measured["peak_rss_mb"]}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def project(rates: dict, sizes: dict, target: str, val_fraction: float, views: int, epochs: int,
            batch_size: int, views_per_epoch: int = 1, train_fraction: float | None = None,
            test_fraction: float = 1.0) -> dict:
    """Seconds for the real dataset (``sizes``), ``target`` held out, at ``rates``.

    Each source domain trains on ``train_fraction`` of its images (default 1 - ``val_fraction``) and
    validates on ``val_fraction``; ``test_fraction`` of the target is tested (the gpu preset's official
    DomainNet split: 0.02, 0.01 and 0.03, which its per-class rounding up makes slightly larger). An
    epoch is floor(train images x ``views_per_epoch`` / batch) steps (promptgen.toolkit.epochs: 1 is the gpu
    preset's epoch over the images, ``views`` the cpu preset's over every view). Extracted: every
    train image's ``views`` views, the val images and the tested ones."""
    train_fraction = 1 - val_fraction if train_fraction is None else train_fraction
    train = {d: round(n * train_fraction) for d, n in sizes.items() if d != target}
    val = {d: round(n * val_fraction) for d, n in sizes.items() if d != target}
    steps = sum(epochs * steps_per_epoch(n * views_per_epoch, batch_size) for n in train.values())
    tested = round(sizes[target] * test_fraction)
    scored = tested + sum(val.values())
    extracted = tested + sum(val.values()) + sum(train.values()) * views
    return {"extraction_s": extracted / rates["extraction_images_per_s"], "extracted_images": extracted,
            "stage1_s": steps / rates["stage1_steps_per_s"], "stage1_steps": steps,
            "inference_s": scored / rates["scored_images_per_s"], "scored_images": scored}


def run(request, suite, out: Path) -> tuple[str, dict]:
    """The scale suite's stages; ``request`` is benchmarks.command_line.Request (--dry-run, --cache-dir)."""
    settings = settings_of(suite)
    example, method, target = suite.example(), suite.methods[0], suite.targets[0]
    factory = default_registry().get("dataset", example.dataset).factory
    # the folder names when the plugin declares them (DomainNet's 'wine_glass' for the class 'wine glass')
    classes = list(getattr(factory, "class_folders", None) or getattr(factory, "classes", ()))
    if not classes:
        raise ConfigError(f"{suite.path}: dataset {example.dataset!r} declares no class names to generate")
    if request.dry_run:
        return (f"dry run: scale suite {suite.name}: {len(settings['sizes'])} domains x {len(classes)} classes x "
                f"{settings['per_class']} images under {out / 'tree'}, then data info, cache extract and "
                f"{method} with {target} held out"), {"suite": suite.name, "dry_run": True}
    tree, cache = out / "tree", Path(request.cache_dir) if request.cache_dir else out / "cache"
    made = generate(tree / settings["dir_name"], classes, list(settings["sizes"]), settings["per_class"],
                    settings["image_size"])
    print(f"scale: tree of {made['files']:,} images ({made['bytes'] / 2**20:.0f} MiB)", flush=True)
    backbone = example.backbone
    model = [flag for key, flag in (("model", "--model"), ("pretrained", "--pretrained"))
             if getattr(backbone, key) for flag in (flag, getattr(backbone, key))]
    common = ["--dataset", example.dataset, "--data-root", str(tree), "--backbone", backbone.name, *model,
              "--device", backbone.device, "--cache-dir", str(cache), "--quiet"]
    views = example.views or 1
    sets = [part for component, values in example.overrides.items() for key, value in values.items()
            for part in ("--set", f"{component}.{key}={json.dumps(value)}")]
    stages = {"data info": command(["data", "info", "--dataset", example.dataset, "--data-root", str(tree), "--json"])}
    print(f"scale: data info {stages['data info']['seconds']:.0f} s", flush=True)
    before = size_of(cache)
    stages["cache extract"] = command(["cache", "extract", *common, "--views", str(views), *sets])
    stages["cache extract"]["cache_mb"] = (size_of(cache) - before) / 2**20
    print(f"scale: cache extract {stages['cache extract']['seconds']:.0f} s", flush=True)
    run_dir = out / "runs" / f"{method}-{target}"
    stages["train"] = command(["train", *common, "--method", method, "--target", target, "--preset", example.preset,
                               "--views", str(views), "--out", str(run_dir), "--force", *sets])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sizes, seconds = metrics["sizes"], metrics["seconds"]
    steps = _stage1_steps(metrics)
    scored = sum(n for split, n in sizes.items() if split != "train")
    rates = {"extraction_images_per_s": made["files"] / stages["cache extract"]["seconds"],
             "stage1_steps_per_s": steps / seconds["stage1"] if steps and seconds.get("stage1") else float("nan"),
             "scored_images_per_s": scored / seconds["test"]}
    used = settings["rates"] or rates
    projection = {name: project(used, settings["sizes"], target, **{"val_fraction": settings["val_fraction"], **schedule})
                  for name, schedule in settings["project"].items()}
    text = table(suite, made, stages, metrics, steps, scored, rates, projection, bool(settings["rates"]))
    (out / "records").mkdir(parents=True, exist_ok=True)
    write_json(out / "records" / "scale.json", {"tree": made, "stages": stages, "seconds": seconds, "sizes": sizes,
                                                "rates": rates, "projection": projection})
    return text, {"suite": suite.name, "rows": len(stages)}


def _stage1_steps(metrics: dict) -> int:
    """Optimizer steps of stage I, from the prompt labels' own records (epochs and batches per label)."""
    labels = (metrics.get("fit") or {}).get("stage1") or {}
    return sum(label.get("steps", 0) for label in labels.values() if isinstance(label, dict))


def table(suite, made, stages, metrics, steps, scored, rates, projection, given_rates: bool) -> str:
    seconds = metrics["seconds"]
    lines = [f"{suite.name}: {made['files']:,} generated images, {metrics['method']}, "
             f"{'+'.join(metrics['targets'])} held out, {metrics['classes']} classes", "",
             "| stage | wall s | peak RSS MB | note |", "|---|---:|---:|---|",
             f"| generate the tree | {made['seconds']:.0f} | – | {made['bytes'] / 2**20:.0f} MiB of JPEGs |"]
    for name, stage in stages.items():
        note = (f"cache +{stage['cache_mb']:.1f} MiB; {rates['extraction_images_per_s']:.0f} images/s"
                if "cache_mb" in stage else "")
        lines.append(f"| {name} | {stage['seconds']:.1f} | {stage['peak_rss_mb']:.0f} | {note} |")
    notes = {"stage1": f"{steps} steps: {rates['stage1_steps_per_s']:.2f} steps/s",
             "test": f"{scored:,} images scored (val + held-out domain): {rates['scored_images_per_s']:.1f} images/s"}
    lines += [f"| train: {stage} | {value:.1f} | – | {notes.get(stage, '')} |" for stage, value in seconds.items()]
    if projection:
        lines += ["", f"Projected for the real dataset ({sum(suite.scale['sizes'].values()):,} images) at "
                      f"{'the rates in the suite file' if given_rates else 'the rates measured above'}:", "",
                  "| schedule | extraction h (images) | stage I h (steps) | inference h (images) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {name} | {p['extraction_s'] / 3600:.2f} ({p['extracted_images']:,}) | {p['stage1_s'] / 3600:.2f} "
                  f"({p['stage1_steps']:,}) | {p['inference_s'] / 3600:.2f} ({p['scored_images']:,}) |"
                  for name, p in projection.items()]
    return "\n".join(lines)
