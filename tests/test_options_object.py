"""promptgen.components.options' options objects: a component's ``Options`` attrs class is read like a signature
(same Option records), built from the resolved values and passed whole; a signature-declared third-party factory
keeps working beside it, both through a real entry point, the CLI and a suite."""

import json

import attrs
import pytest

from benchmarks import run as benchmarks_run
from benchmarks.records import RecordStore
from promptgen import cli
from promptgen.components.options import call_factory, declared_options, options_class
from promptgen.components.registry import load_registry
from promptgen.components.schedule import GeneratorScheduleOptions, PromptLearnerOptions, Schedule
from promptgen.errors import ConfigError

# A third-party plugin with both kinds of factory: a generator whose options are an object (with a shared base and
# one redeclared default), and one that declares them as keyword parameters, as before options objects existed.
PLUGIN = '''
from typing import Annotated

import attrs
import torch

from promptgen import hookimpl
from promptgen.toolkit import GeneratorScheduleOptions, option


class _Mean:
    """The mean prompt label for every image."""

    def fit(self, backbone, train, prompt_labels, val):
        self.prompt = torch.stack([label.ctx for label in prompt_labels]).mean(0)
        return {"history": [{"epoch": e, "loss": 0.0} for e in range(self.epochs)]}

    def sample(self, features):
        return self.prompt.expand(len(features), -1, -1)

    def state_dict(self):
        return {"prompt": self.prompt}

    def load_state_dict(self, state):
        self.prompt = state["prompt"]


class ObjectMean(_Mean):
    """Options as an object."""

    @attrs.frozen(kw_only=True)
    class Options(GeneratorScheduleOptions):
        scale: Annotated[float, option("a factor nobody uses", above=0)] = 1.0
        epochs: int = 3
        warmup_epochs: int = 0

    def __init__(self, feature_dim, n_ctx, ctx_dim, options: Options = Options()):
        self.options, self.schedule, self.epochs = options, options.schedule, options.epochs


class KeywordMean(_Mean):
    """Options as keyword parameters."""

    def __init__(self, feature_dim, n_ctx, ctx_dim, scale: Annotated[float, option("a factor", above=0)] = 1.0,
                 epochs: int = 3):
        self.scale, self.epochs = scale, epochs


@hookimpl
def register_generators(register):
    register("object-mean", ObjectMean)
    register("keyword-mean", KeywordMean)
'''
SMALL = ["--set", "digits-dg.per_class=10", "--set", "spg-coop.epochs=1", "--set", "spg-coop.warmup_epochs=0",
         "--views", "1", "--quiet"]


def test_an_options_object_declares_what_the_same_keyword_parameters_would():
    @attrs.frozen(kw_only=True)
    class Options(PromptLearnerOptions):
        ctx_init: str = "a photo of a"
        epochs: int = 50

    class Learner:
        def __init__(self, options: Options = Options()):
            self.options = options

    def keywords(ctx_init: str = "a photo of a", warmup_lr: float = 1e-5, momentum: float = 0.9, epochs: int = 50,
                 batch_size: int = 32, lr: float = 2e-3, warmup_epochs: int = 1, weight_decay: float = 5e-4,
                 seed: int = 0, progress: bool = True):
        pass

    from_object, from_signature = declared_options(Learner, "prompt_learner"), declared_options(keywords, "method")
    # the component's own field first, then the SGD extension, then the shared block, the run values last
    assert list(from_object) == list(from_signature)
    for name, option in from_object.items():
        expected = from_signature[name]
        assert (option.default, option.types, option.info.help, option.info.minimum, option.info.above) == \
            (expected.default, expected.types, expected.info.help, expected.info.minimum, expected.info.above), name
    assert from_object["lr"].info.search is not None and from_signature["lr"].info.search is None  # PROMPT_LR


def test_call_factory_builds_the_object_and_passes_the_rest_as_keywords():
    @attrs.frozen(kw_only=True)
    class WidthOptions(GeneratorScheduleOptions):
        width: int = 4

    seen = {}

    class Generator:
        Options = WidthOptions

        def __init__(self, feature_dim, n_ctx, ctx_dim, options: WidthOptions = WidthOptions()):
            seen.update(dims=(feature_dim, n_ctx, ctx_dim), options=options)

    call_factory(Generator, {"feature_dim": 8, "n_ctx": 2, "ctx_dim": 3, "width": 7, "epochs": 5, "seed": 9})
    assert seen["dims"] == (8, 2, 3)
    assert seen["options"] == WidthOptions(width=7, epochs=5, seed=9)
    assert seen["options"].schedule == Schedule(epochs=5, batch_size=32, lr=2e-3, warmup_epochs=4, weight_decay=1e-4)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        seen["options"].width = 1  # frozen: no component changes its options behind the run's record


def test_a_function_factory_takes_its_options_object_by_annotation_and_a_plain_options_option_is_an_option():
    def factory(feature_dim, n_ctx, ctx_dim, options: GeneratorScheduleOptions = GeneratorScheduleOptions()):
        return options

    assert options_class(factory) is GeneratorScheduleOptions
    assert call_factory(factory, {"feature_dim": 1, "n_ctx": 1, "ctx_dim": 1, "lr": 0.5}).lr == 0.5

    def keyword(options: str = "x"):  # an option that happens to be called "options": no attrs class, a keyword
        return options

    assert options_class(keyword) is None and list(declared_options(keyword, "method")) == ["options"]


def test_a_bad_value_for_an_options_object_fails_naming_the_component_and_its_option(install_plugin):
    install_plugin("pg_two_ways", PLUGIN)
    registry = load_registry()
    with pytest.raises(ConfigError, match=r"generator 'object-mean' \(plugin pg_two_ways\): option 'scale' must be "
                                          r"> 0, got -1"):
        registry.create("generator", "object-mean", feature_dim=2, n_ctx=1, ctx_dim=2, scale=-1)


def test_an_unknown_option_of_an_options_object_is_refused_before_any_work(install_plugin, tmp_path, capsys):
    install_plugin("pg_two_ways", PLUGIN)
    assert cli.main(["train", "--target", "photo", "--method", "spg-object-mean", "--set", "object-mean.widht=3",
                     "--out", str(tmp_path / "run"), "--dry-run", *SMALL]) == 2
    assert "unknown option 'widht'" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_both_ways_through_a_real_entry_point_list_and_build_alike(install_plugin):
    install_plugin("pg_two_ways", PLUGIN)
    registry = load_registry()
    by_object = registry.get("generator", "object-mean").options
    assert list(by_object) == ["scale", "lr_schedule", "epochs", "batch_size", "lr", "warmup_epochs", "weight_decay",
                               "seed", "progress"]
    assert (by_object["epochs"].default, by_object["warmup_epochs"].default) == (3, 0)
    assert by_object["lr"].info.search is not None  # GENERATOR_LR kept
    assert list(registry.get("generator", "keyword-mean").options) == ["scale", "epochs"]
    built = registry.create("generator", "object-mean", feature_dim=2, n_ctx=1, ctx_dim=2, scale=2.0, epochs=1)
    assert (built.options.scale, built.options.epochs, built.schedule.epochs) == (2.0, 1, 1)
    assert registry.create("generator", "keyword-mean", feature_dim=2, n_ctx=1, ctx_dim=2, scale=2.0).scale == 2.0


@pytest.mark.slow
def test_both_ways_train_through_the_cli_and_a_suite(install_plugin, tmp_path):
    install_plugin("pg_two_ways", PLUGIN)
    for name in ("object-mean", "keyword-mean"):
        out = tmp_path / name
        assert cli.main(["train", "--target", "photo", "--method", f"spg-{name}", "--set", f"{name}.epochs=2",
                         "--out", str(out), *SMALL]) == 0
        config = json.loads((out / "config.json").read_text())
        assert json.dumps(config).count('"epochs": 2') >= 1
        assert len(json.loads((out / "history.json").read_text())) == 2  # the set value reached the built component
    suite = tmp_path / "two-ways.toml"
    suite.write_text('description = "both ways"\ntargets = ["photo"]\nmethods = ["spg-object-mean", '
                     '"spg-keyword-mean"]\nviews = 1\n[backbone]\ndevice = "cpu"\n[overrides.digits-dg]\n'
                     'per_class = 10\n[overrides.spg-coop]\nepochs = 1\nwarmup_epochs = 0\n')
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(tmp_path / "sweep"), "--quiet"]) == 0
    assert sorted(r["job"]["method"] for r in RecordStore(tmp_path / "sweep").records()) == \
        ["spg-keyword-mean", "spg-object-mean"]
