"""Component contracts. Each kind of component a plugin can register has a Protocol here.

Registration checks a component's class against its protocol (see ``missing_members``):
every method must exist and accept the protocol's arguments, every attribute must be
declared (class attribute, property, annotation or attrs field).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:  # annotations only: checking a plugin against these imports no torch
    import torch

    from promptgen.values import FeatureSet, PromptLabel, Sample, Tokens


class Backbone(Protocol):
    """A frozen CLIP-style image and text encoder.

    Optional: ``image_fingerprint`` (model name + hash of the image tower's weights alone), which
    keys the feature cache instead of ``fingerprint``, so that a backbone whose text tower alone was
    retrained reuses every cached image feature.
    """

    fingerprint: str  # model name + hash of all the weights: what prompt labels and runs are tied to
    ctx_dim: int  # width of the text token embeddings (the space prompts live in)
    embed_dim: int  # width of the joint image-text feature space
    context_length: int  # maximum number of text tokens
    logit_scale: float  # multiplies cosine similarities to give logits
    device: torch.device

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, H, W] (already transformed) -> L2-normalised features [N, embed_dim], float32."""

    def image_transform(self, train: bool) -> Callable:
        """PIL image -> tensor [3, H, W]. train: random resized crop + flip; eval: resize + center crop."""

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Texts -> Tokens (ids [N, context_length], eot_index [N])."""

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [N, L] -> token embeddings [N, L, ctx_dim] (without positional embeddings)."""

    def encode_prompts(self, token_embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """token_embeddings [N, L, ctx_dim], eot_index [N] -> L2-normalised text features [N, embed_dim].

        L may stop anywhere after the largest EOT index: positions after EOT never change the result.
        """


class PromptLearner(Protocol):
    """Stage I: learns one soft prompt (a prompt label) from one domain's image features."""

    def fit(
        self,
        backbone: Backbone,
        class_names: Sequence[str],
        train: FeatureSet,
        val: FeatureSet | None,
        domain: str,
    ) -> PromptLabel:
        """Return the prompt label learned on ``train`` (model selection on ``val`` when given)."""


class Generator(Protocol):
    """Stage II: maps an image feature (plus noise) to a soft prompt."""

    def fit(
        self,
        backbone: Backbone,
        train: FeatureSet,
        prompt_labels: Sequence[PromptLabel],
        val: FeatureSet | None,
    ) -> dict | None:
        """Learn from (image feature, prompt label of its domain) pairs; train.domain_ids index prompt_labels.

        Return None or a report (a JSON-able dict) that the run records under ``fit`` in metrics.json.
        Its ``"history"``, when present, is stage II's per-epoch record -- what history.json holds and
        curves.png plots: a list of one dict per epoch, in order, each with ``"epoch"`` (int, from 0)
        and numbers (None or NaN for a gap): losses under names containing "loss" (``"loss"``,
        ``"loss_g"``), ``"val_accuracy"`` (the val split's accuracy with the generated prompts: what the
        built-ins select their epoch on), any other series (``"kl"``, ``"lr"``). By convention also
        ``"best_epoch"`` and ``"val_accuracy"`` of the state it keeps. ``check_fit_report`` checks it.
        """

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, feature_dim] -> prompts [N, n_ctx, ctx_dim]."""

    def state_dict(self) -> dict:
        """Everything needed to rebuild the trained generator with load_state_dict."""

    def load_state_dict(self, state: dict) -> Any:
        """Restore a state produced by state_dict."""


class SteppedGenerator(Generator, Protocol):
    """A generator that promptgen's epoch loop trains (promptgen.toolkit.generator_training): it gives one
    training step (``trainer``) and its schedule; the loop runs the epochs, the learning rate and the selection.
    Optional: a generator that trains itself satisfies Generator alone (DPSPG then trains its two paths one
    after the other)."""

    schedule: Any  # promptgen.components.schedule.Schedule: epochs, batch_size, lr, warmup_epochs, weight_decay
    # the next three on the generator, or on its options object (a GeneratorScheduleOptions) as ``options.seed`` ...
    seed: int
    lr_schedule: str  # "epoch" (Dassl's, per epoch) or "step" (per-step cosine)
    progress: bool

    def trainer(self, backbone: Backbone, train: FeatureSet, prompt_labels: Sequence[PromptLabel]) -> Any:
        """The Trainer (promptgen.toolkit.generator_training.Trainer) of one step on ``train``."""


class Dataset(Protocol):
    """A domain-generalization dataset: domains sharing one list of classes, loaded lazily."""

    domains: tuple[str, ...]
    classes: tuple[str, ...]  # class names as they appear in prompts

    def samples(self, domain: str, split: str) -> Sequence[Sample]:
        """The samples of one domain's split ('train', 'val' or 'test'); deterministic for a seed."""

    def load_image(self, sample: Sample) -> Any:
        """Load one sample's image as an RGB PIL image."""


class Method(Protocol):
    """A DG method: what it learns on a run's source domains and how it scores the images of any split.

    ``inputs`` says what it trains and predicts on: "features" (the frozen image encoder's cached
    features, read through the feature cache) or "images" (pixels: methods that change the image
    encoder's input, such as visual prompts, bypass the cache). ``components()`` names the other
    components it builds, as (kind, name) pairs, so that a run checks their names and options
    before any work and gives each its own settings. See promptgen.runs.context.RunContext for what a
    method sees of its run.

    Optional, on the factory (class attributes, static or class methods): ``rank`` (its row in the
    tables; the SPG paper's order), ``deterministic`` (True: the seed changes nothing, sweeps run
    it once), ``presets`` (per-preset option values), ``unsupported(backbone) -> str | None`` (why
    it cannot run on a BackboneConfig, e.g. it needs a ViT image tower: ``methods = ["all"]`` then
    skips it and says why); on the instance, ``quality(run) -> dict`` (metrics of what it generated),
    and for a method that gives each image its own prompt, ``instance_prompts(run, split, draws=None)``
    (the prompts [N, n_ctx, D]) with ``logits(run, split, draws=None)`` accepting ``draws`` too
    ([draws, N, ...]: that many noise draws per image; promptgen.toolkit.evaluate.per_draw), which the
    benchmark's stability study compares across seeds and draws; with ``prompt_labels()`` as well (the
    stage I prompt labels, one per source domain, that its generated prompts learned to produce),
    ``promptgen inspect RUN_DIR`` tells where between the labels and the generated prompts accuracy is lost.
    """

    inputs: str  # "features" or "images"

    def components(self) -> Sequence[tuple[str, str]]:
        """The (kind, name) of every component this method builds through its run, e.g. (("generator", "my-generator"),)."""

    def fit(self, run: Any) -> dict:
        """Train on the run's source domains; return a report (JSON-able; a "history" list is kept apart)."""

    def logits(self, run: Any, split: str) -> torch.Tensor:
        """Class scores [N, C] for the samples of ``split`` ("val" or "test/<domain>"), in the run's order."""

    def save(self, directory: Any) -> None:
        """Write what ``load`` needs into ``directory`` (the run directory)."""

    def load(self, directory: Any, run: Any) -> None:
        """Restore the trained state that ``save`` wrote, for ``run`` (the same config, rebuilt)."""


class Launcher(Protocol):
    """Runs independent jobs (benchmark runs, extraction shards) somewhere: in-process, a process pool, a cluster.

    Optional attributes: ``workers``, how many jobs run at once (a search's dry run divides its time estimate by
    it; a sweep whose workers share no disk cuts its feature extraction into that many shards); ``shares_disk``
    (True when absent), whether the jobs see this process's files at the same paths. False: a sweep sends each job
    what it reads (the features) and the job returns what it makes (its run directory), which this process
    writes (benchmarks.remote, docs/distributed.md)."""

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], done: Callable[[int, Any], None] | None = None
            ) -> list:
        """Return [fn(job) for job in jobs], in order, however the work is spread. ``fn`` is one object for every
        job (a launcher may send it to each machine once). ``done(index, result)``, when given, is called in this
        process as each job's result arrives, in any order: where a sweep writes its records. A job the launcher
        could not run (its worker or node died, retries spent) gives ``done(index, error)`` and holds the
        exception in the list; without ``done``, the launcher raises it."""


HISTORY_DOC = "docs/plugins.md, 'Per-epoch history'"


def check_fit_report(report: Any, where: str) -> dict:
    """A generator's ``fit`` report as :meth:`Generator.fit` specifies it ({} for None), else a GeneratorError
    naming ``where`` (e.g. "generator 'x' (plugin y)") and the rule it breaks."""
    from promptgen.errors import GeneratorError

    def fail(problem: str) -> GeneratorError:
        return GeneratorError(f"{where}: fit returned {problem}; a report is None or a dict whose 'history' is a "
                              f"list of one dict per epoch, e.g. {{'epoch': 0, 'loss': 0.5, 'val_accuracy': 0.8}} "
                              f"({HISTORY_DOC})")

    if report is None:
        return {}
    if not isinstance(report, dict):
        raise fail(f"a {type(report).__name__}, not a dict")
    history = report.get("history")
    if history is None:
        return report
    if not isinstance(history, list):
        raise fail(f"a 'history' that is a {type(history).__name__}, not a list")
    previous = -1
    for index, row in enumerate(history):
        if not isinstance(row, dict):
            raise fail(f"a 'history' whose row {index} is a {type(row).__name__}, not a dict")
        epoch = row.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= previous:
            raise fail(f"a 'history' whose row {index} has 'epoch' {epoch!r}: it must be an int, from 0, "
                       f"increasing row by row")
        previous = epoch
        bad = [key for key, value in row.items() if not isinstance(key, str) or isinstance(value, bool)
               or not isinstance(value, (int, float, type(None)))]
        if bad:
            raise fail(f"a 'history' whose row {index} has {bad[0]!r} = {row[bad[0]]!r}: every value must be a number")
    return report


def protocol_members(protocol: type) -> tuple[dict[str, inspect.Signature], set[str]]:
    """(methods with their signatures, data attribute names) that a protocol declares."""
    methods = {
        name: inspect.signature(value)
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }
    attributes = {name for name in getattr(protocol, "__annotations__", {}) if not name.startswith("_")}
    return methods, attributes


def _declared_attributes(cls: type) -> set[str]:
    names = set(dir(cls))
    for klass in inspect.getmro(cls):
        names.update(getattr(klass, "__annotations__", {}))
    for field in getattr(cls, "__attrs_attrs__", ()):
        names.add(field.name)
    return names


def missing_members(cls: Any, protocol: type) -> list[str]:
    """Describe each way ``cls`` (a class, or an instance) fails ``protocol``; empty when it conforms."""
    if not isinstance(cls, type):
        cls = type(cls)
    methods, attributes = protocol_members(protocol)
    declared = _declared_attributes(cls)
    problems = []
    for name, signature in methods.items():
        impl = inspect.getattr_static(cls, name, None)
        if impl is None:
            problems.append(f"missing method '{name}{_public(signature)}'")
        elif not callable(getattr(cls, name)):
            problems.append(f"'{name}' must be a method, got {type(impl).__name__}")
        else:
            problem = _signature_problem(name, getattr(cls, name), signature)
            if problem:
                problems.append(problem)
    for name in sorted(attributes - declared):
        problems.append(f"missing attribute '{name}'")
    return problems


def _public(signature: inspect.Signature) -> str:
    params = [p for p in signature.parameters.values() if p.name != "self"]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _signature_problem(name: str, impl: Callable, expected: inspect.Signature) -> str | None:
    """The implementation must accept the protocol's arguments, by position and by name."""
    try:
        actual = inspect.signature(impl)
    except (TypeError, ValueError):
        return None  # builtins without signatures: nothing to check
    wanted = [p for p in expected.parameters.values() if p.name != "self" and p.default is inspect.Parameter.empty]
    params = list(actual.parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    try:
        inspect.Signature(params).bind(*[object()] * len(wanted))
    except TypeError as error:
        return f"method '{name}{_public(actual)}' cannot be called as '{name}{_public(expected)}': {error}"
    return None
