"""The performance suite: each speed-up measured as two arms side by side in one run, as a ratio.

  stage2       a stage II step with image features read from the cache vs recomputed by the image
               encoder every step (the official SPG code's structure)
  inference    SPG inference (one generated prompt per image) with EOT-truncated vs full-length text
               encoding, at each class count, with the largest logit difference between the two
  prefix       the same inference with every prompt encoded whole (EOT-truncated) vs its prefix
               [SOS] ctx shared by all classes and classes grouped by length; with the floor: the
               whole-prompt rate scaled to the tokens actually needed (prefix once + each suffix)
  coop-step    a CoOp training step (one context, all class prompts, backward) with whole prompts
               vs the shared prefix, at each class count
  extraction   feature extraction from the dataset (decode, transform, loader, encode) vs the bare
               image-encoder forward on tensors already in memory: what the data pipeline costs
  cache        reading features from the LMDB cache vs indexing the same features in memory
  precision    zero-shot scoring of a batch of images (image encoder + class texts) in fp32 vs bf16
               autocast, with the largest logit difference and the share of equal predictions
  startup      a `promptgen` command (--help, plugins) vs `python -c "import torch"`, each a new
               interpreter: a ratio above 1 is a CLI that starts faster than torch alone imports

Every arm runs in a fresh process, so its peak RSS (which includes the backbone and the dataset that
both arms load) is its own. Arms are timed after a warm-up; rates are per second.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import subprocess
import sys
import time

import torch

from promptgen.runs import defaults
from promptgen.storage.cache import FeatureCache
from promptgen.runs.config import BackboneConfig
from promptgen.toolkit.data import SampleImages, extract_features
from promptgen.errors import ConfigError
from promptgen.toolkit.evaluate import instance_logits
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.components.registry import default_registry
from promptgen.components.resolve import Settings, build
from promptgen.components.run_values import RunValues
from promptgen.values import PromptLabel

MEASUREMENTS = ("stage2", "inference", "prefix", "coop-step", "extraction", "cache", "precision", "startup")
DEFAULTS = {"dataset": defaults.DATASET, "target": None, "stage2_steps": 30, "stage2_images": None, "batch_size": 32,
            "generator": defaults.PERF_GENERATOR, "class_names_from": defaults.PERF_CLASS_NAMES,
            "inference_images": 64, "classes": [10, 345], "coop_steps": 3, "extraction_images": 512, "extraction_workers": [0], "cache_dir": None,
            "startup_commands": ["--help", "plugins"],
            "fresh_processes": True}  # False: arms share this process (quick checks; peak RSS is then shared too)


def class_names(settings: dict, count: int) -> list[str]:
    """The first ``count`` class names of dataset plugin ``class_names_from``, whose classes are known without
    data (a class attribute): realistic prompt lengths for the inference arms."""
    name = settings["class_names_from"]
    names = list(getattr(default_registry().get("dataset", name).factory, "classes", ()))
    if not 1 <= count <= len(names):
        raise ConfigError(f"perf: classes: {count} classes asked for, but dataset {name!r} declares "
                          f"{len(names)} class names")
    return names[:count]


class WholePrompts:
    """A backbone that encodes every class prompt whole (no prefix shared across classes); ``full_length``:
    over the whole context too, as CLIP itself does. The baseline arms."""

    def __init__(self, backbone, full_length: bool = False):
        self._backbone, self._full_length = backbone, full_length

    def __getattr__(self, name):
        if name == "encode_prompt_set":
            raise AttributeError(name)
        return getattr(self._backbone, name)

    def encode_prompts(self, token_embeddings, eot_index, **_):
        return self._backbone.encode_prompts(token_embeddings, eot_index, full_length=self._full_length)


def _text_path(backbone, arm: str):
    return {"full-length": WholePrompts(backbone, full_length=True), "truncated": WholePrompts(backbone),
            "whole prompts": WholePrompts(backbone)}.get(arm, backbone)


def _tokens(assembler) -> dict:
    """Token positions per context: encoded whole (every class up to the longest EOT) vs needed (the prefix
    once, then each class's own suffix up to its EOT)."""
    prefix = 1 + assembler.n_ctx
    classes = len(assembler.class_names)
    return {"whole_tokens": classes * assembler.length,
            "needed_tokens": prefix + int((assembler.eot_index + 1 - prefix).sum())}


def _setup(settings: dict):
    torch.manual_seed(0)
    registry = default_registry()
    backbone = BackboneConfig(**settings["backbone"]).build(registry)
    dataset = build(registry, "dataset", settings["dataset"], Settings(settings.get("preset", "cpu")), RunValues())
    target = settings["target"] or dataset.domains[-1]
    sources = [d for d in dataset.domains if d != target]
    samples = [s for d in sources for s in dataset.samples(d, "train")]
    return backbone, dataset, samples


def _generator(backbone, settings: dict):
    """An untrained generator (the perf arms time steps, not what they learn)."""
    return build(default_registry(), "generator", settings["generator"], Settings(settings.get("preset", "cpu")),
                 RunValues(progress=False), feature_dim=backbone.embed_dim, n_ctx=4, ctx_dim=backbone.ctx_dim)


def _timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _stage2(settings: dict, arm: str) -> dict:
    backbone, dataset, samples = _setup(settings)
    # the cached arm needs these images' features in the cache first: a few hundred keep ViT-B-16 on a CPU short
    samples = samples[: settings["stage2_images"]] if settings["stage2_images"] else samples
    with FeatureCache(settings["cache_dir"]) as cache:
        cached = cache.get(backbone, dataset, settings["dataset"], samples, train=True, views=1, progress=False)
    labels = [PromptLabel(ctx=0.02 * torch.randn(4, backbone.ctx_dim), fingerprint=backbone.fingerprint,
                          domain=str(d), class_names=dataset.classes) for d in range(len(dataset.domains))]
    images = SampleImages(dataset, samples, backbone.image_transform(True))
    generator = _generator(backbone, settings)
    if not hasattr(generator, "trainer"):
        raise ConfigError(f"perf: stage2: generator {settings['generator']!r} has no trainer() to time "
                          f"(promptgen.toolkit.generator_training.Trainer)")
    trainer = generator.trainer(backbone, cached, labels)
    for module in trainer.modules:
        module.train()
    rng, batch = torch.Generator().manual_seed(0), settings["batch_size"]

    def steps():
        for _ in range(settings["stage2_steps"]):
            index = torch.randint(len(samples), (batch,), generator=rng).to(trainer.features.device)
            if arm == "recomputed":
                # The official structure: every step encodes its real batch and a "fake" batch from pixels.
                fake = torch.randint(len(samples), (batch,), generator=rng).to(index.device)
                both = torch.cat([index, fake])
                pixels = torch.stack([images[int(i)][0] for i in both])
                trainer.features[both] = backbone.encode_images(pixels).to(trainer.features.dtype)
            trainer.step(index, rng)

    seconds = _timed(steps)
    return {"rate": settings["stage2_steps"] / seconds, "unit": "steps/s"}


def _inference(settings: dict, arm: str, classes: int) -> dict:
    backbone, dataset, _ = _setup(settings)
    generator = _generator(backbone, settings)
    features = torch.nn.functional.normalize(torch.randn(settings["inference_images"], backbone.embed_dim), dim=-1)
    assembler = PromptAssembler(backbone, class_names(settings, classes), 4)
    model = _text_path(backbone, arm)

    def infer():
        torch.manual_seed(0)  # the same generated prompts in both arms
        return instance_logits(model, assembler, generator, features)

    seconds = _timed(infer)
    # numpy, not a tensor: torch would send a tensor through shared memory that dies with this process
    return {"rate": len(features) / seconds, "unit": "images/s", "logits": infer().numpy(), **_tokens(assembler)}


def _coop_step(settings: dict, arm: str, classes: int) -> dict:
    backbone, _, _ = _setup(settings)
    assembler = PromptAssembler(backbone, class_names(settings, classes), 4)
    model, batch = _text_path(backbone, arm), settings["batch_size"]
    rng = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(batch, backbone.embed_dim, generator=rng), dim=-1)
    labels = torch.randint(classes, (batch,), generator=rng)
    ctx = (0.02 * torch.randn(4, backbone.ctx_dim, generator=rng)).requires_grad_(True)
    steps = settings["coop_steps"]

    def step():
        loss = torch.nn.functional.cross_entropy(
            backbone.logit_scale * images @ assembler.text_features(model, ctx).T, labels)
        ctx.grad = None
        loss.backward()
        return loss

    seconds = _timed(lambda: [step() for _ in range(steps)])
    return {"rate": steps / seconds, "unit": "steps/s", "logits": ctx.grad.numpy().copy()}


def _extraction(settings: dict, arm: str, workers: int) -> dict:
    backbone, dataset, samples = _setup(settings)
    samples = samples[: settings["extraction_images"]]
    if arm == "pipeline":  # decode + transform in `workers` loader processes, overlapping the encoder
        seconds = _timed(lambda: extract_features(backbone, dataset, samples, batch_size=128, num_workers=workers,
                                                  progress=False))
    else:
        pixels = torch.stack([SampleImages(dataset, samples, backbone.image_transform(False))[i][0]
                              for i in range(len(samples))])

        def forward():
            for start in range(0, len(pixels), 128):
                backbone.encode_images(pixels[start:start + 128])

        seconds = _timed(forward)
    return {"rate": len(samples) / seconds, "unit": "images/s"}


def _cache(settings: dict, arm: str) -> dict:
    backbone, dataset, samples = _setup(settings)
    with FeatureCache(settings["cache_dir"]) as cache:
        def read():
            return cache.get(backbone, dataset, settings["dataset"], samples, train=False, progress=False)

        features = read()  # fills the cache if needed, then the warm-up
        if arm == "lmdb":
            seconds = _timed(read, repeats=3)
        else:
            array, index = features.features.numpy().copy(), torch.arange(len(samples)).numpy()
            seconds = _timed(lambda: torch.from_numpy(array[index]), repeats=3)
    return {"rate": len(samples) / seconds, "unit": "features/s"}


def _precision(settings: dict, arm: str) -> dict:
    settings = {**settings, "backbone": {**settings["backbone"], "precision": arm}}
    backbone, dataset, samples = _setup(settings)
    samples = samples[:: max(1, len(samples) // settings["inference_images"])][: settings["inference_images"]]
    images = SampleImages(dataset, samples, backbone.image_transform(False))
    pixels = torch.stack([images[i][0] for i in range(len(samples))])

    def score():
        with torch.no_grad():
            text = backbone.encode_text([f"a photo of a {name}." for name in dataset.classes])
            return backbone.logit_scale * backbone.encode_images(pixels) @ text.T

    seconds = _timed(score)
    return {"rate": len(samples) / seconds, "unit": "images/s", "logits": score().float().cpu().numpy()}


# The interpreter reports its own peak RSS as it exits, as VmHWM (per address space, so new at exec):
# getrusage's ru_maxrss, its own or as a child, would count the pages this torch-loaded process shared
# with it between fork and exec.
REPORT_PEAK = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('peak_kb=%s\\n' % "
                "[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])); ")


def promptgen_code(argv: list[str]) -> str:
    """Python source that runs ``promptgen argv`` as the console script would."""
    return f"sys.argv = ['promptgen', *{argv!r}]; import runpy; runpy.run_module('promptgen', run_name='__main__')"


def measured_interpreter(code: str, what: str) -> dict:
    """Run ``code`` in a new interpreter: {"seconds", "peak_rss_mb", "stdout"}; a failure names ``what``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", REPORT_PEAK + code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise ConfigError(f"{what} failed ({done.returncode}): {done.stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_mb": int(done.stderr.rsplit("peak_kb=", 1)[1].split()[0]) / 1024,
            "stdout": done.stdout}


def _startup(settings: dict, arm: str, command: str) -> dict:
    """Best of 3 wall times of a new interpreter running ``arm``, and its peak RSS."""
    code = "import torch" if arm == "import torch" else promptgen_code(command.split())
    runs = [measured_interpreter(code, f"perf startup: {arm} {command}") for _ in range(3)]
    return {"rate": 1 / min(r["seconds"] for r in runs), "unit": "starts/s",
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def _arm(measurement: str, arm: str, settings: dict, variant: int | None) -> dict:
    """One arm, in its own process: its rate and the process's peak RSS."""
    torch.set_num_threads(settings.get("threads") or torch.get_num_threads())
    run = {"stage2": _stage2, "cache": _cache, "precision": _precision}.get(measurement)
    varied = {"coop-step": _coop_step, "inference": _inference, "prefix": _inference, "extraction": _extraction,
              "startup": _startup}
    result = run(settings, arm) if run else varied[measurement](settings, arm, variant)
    result.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # kB on Linux
    if torch.cuda.is_available():
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


VARIANTS = {"classes": ("inference", "prefix", "coop-step"), "extraction_workers": ("extraction",),
            "startup_commands": ("startup",)}
LABELS = {"classes": "classes", "extraction_workers": "loader workers", "startup_commands": ""}


def _variants(settings: dict, measurement: str) -> list:
    for key, measurements in VARIANTS.items():
        if measurement in measurements:
            return [(value, f"{value} {LABELS[key]}".strip()) for value in settings[key]]
    return [(None, None)]
ARMS = {  # measurement -> (baseline arm, faster arm)
    "stage2": ("recomputed", "cached"),
    "inference": ("full-length", "truncated"),
    "prefix": ("truncated", "prefix-shared"),
    "coop-step": ("whole prompts", "prefix-shared"),
    "extraction": ("pipeline", "encoder only"),
    "cache": ("lmdb", "in-memory"),
    "precision": ("fp32", "bf16"),
    "startup": ("import torch", "promptgen"),
}


def _in_fresh_process(*args) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
        return pool.submit(_arm, *args).result()


def measure(settings: dict, measurements=MEASUREMENTS, progress: bool = True) -> list[dict]:
    """One row per (measurement, class count): both arms' rates, their ratio and peak memory."""
    settings = {**DEFAULTS, **settings}
    cases = [(m, value, label) for m in measurements for value, label in _variants(settings, m)]
    rows = []
    for measurement, variant, label in cases:
        name = measurement + (f" ({label})" if label else "")
        if progress:
            print(f"perf: {name} ...", flush=True)
        baseline_arm, fast_arm = ARMS[measurement]
        call = _in_fresh_process if settings["fresh_processes"] else _arm
        baseline = call(measurement, baseline_arm, settings, variant)
        fast = call(measurement, fast_arm, settings, variant)
        row = {"measurement": name,
               "baseline": baseline_arm, "fast": fast_arm, "unit": baseline["unit"],
               "baseline_rate": baseline["rate"], "fast_rate": fast["rate"], "ratio": fast["rate"] / baseline["rate"],
               "baseline_rss_mb": baseline["peak_rss_mb"], "fast_rss_mb": fast["peak_rss_mb"]}
        if "logits" in baseline:  # the logits (or, for a training step, the gradients) of both arms
            row["max_logit_diff"] = float(abs(baseline["logits"] - fast["logits"]).max())
        if measurement == "precision":
            row["same_predictions"] = float((baseline["logits"].argmax(1) == fast["logits"].argmax(1)).mean())
        for arm, result in (("baseline", baseline), ("fast", fast)):
            if "peak_cuda_mb" in result:
                row[f"{arm}_cuda_mb"] = result["peak_cuda_mb"]
        if measurement == "prefix":  # the rate if the encoder's cost were the tokens actually needed only
            row["floor_rate"] = baseline["rate"] * fast["whole_tokens"] / fast["needed_tokens"]
            row["fast_over_floor"] = fast["rate"] / row["floor_rate"]
        rows.append(row)
    return rows


def table(rows: list[dict], heading: str) -> str:
    lines = [heading, "",
             "| measurement | baseline → fast | unit | baseline | fast | ratio | peak RSS MB (baseline / fast) | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        note = f"max {'grad' if r['unit'] == 'steps/s' else 'logit'} diff {r['max_logit_diff']:.1e}" \
            if "max_logit_diff" in r else ""
        if "same_predictions" in r:
            note += f"; {100 * r['same_predictions']:.1f}% same predictions"
        if "baseline_cuda_mb" in r:
            note += f"; peak CUDA MB {r['baseline_cuda_mb']:.0f} / {r['fast_cuda_mb']:.0f}"
        if "floor_rate" in r:
            note += f"; floor {r['floor_rate']:,.1f} {r['unit']}, fast = {r['fast_over_floor']:.2f} x floor"
        lines.append(f"| {r['measurement']} | {r['baseline']} → {r['fast']} | {r['unit']} | {r['baseline_rate']:,.1f} "
                     f"| {r['fast_rate']:,.1f} | **{r['ratio']:.2f}x** | {r['baseline_rss_mb']:.0f} / "
                     f"{r['fast_rss_mb']:.0f} | {note} |")
    return "\n".join(lines)
