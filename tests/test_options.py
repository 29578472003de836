"""Component options are declared once (the factory's signature), listed with their types, defaults and presets,
checked before any work, and set from the command line with --set."""

from __future__ import annotations

import functools
import re

import pytest

from conftest import stub_generator_plugin
from promptgen import cli
from promptgen.errors import ConfigError
from promptgen.runs.settings import parse_settings
from promptgen.components.options import check_values, declared_options
from promptgen.components.presets import component_preset


class Example:
    presets = {"gpu": {"epochs": 70}, "gpu/pacs": {"lr": 2e-3}, "cpu": {"epochs": 2}}

    def __init__(self, feature_dim, n_ctx, ctx_dim, epochs: int = 10, lr: float = 1e-3, clip: dict | str | None = None,
                 name="x", scale=(0.5, 1.0), flag: bool = False, **ignored):
        pass


def test_options_are_the_keyword_parameters_but_the_hook_arguments():
    options = declared_options(Example, "generator")
    assert list(options) == ["epochs", "lr", "clip", "name", "scale", "flag"]
    assert options["epochs"].types == (int,) and options["epochs"].default == 10
    assert options["clip"].type_text() == "dict or str or None"
    assert options["name"].types == (str,)  # from the default, without an annotation
    partial = declared_options(functools.partial(Example, epochs=3), "generator")
    assert partial["epochs"].default == 3


@pytest.mark.parametrize("values, message", [
    ({"epocs": 1}, "unknown option 'epocs'; its options: epochs, lr, clip, name, scale, flag"),
    ({"epochs": "one"}, "option 'epochs' must be int, got 'one' (str)"),
    ({"epochs": 2.5}, "option 'epochs' must be int, got 2.5"),
    ({"epochs": True}, "option 'epochs' must be int, got True"),
    ({"flag": 1}, "option 'flag' must be bool, got 1"),
    ({"clip": 3}, "option 'clip' must be dict or str or None, got 3"),
])
def test_bad_values_name_the_component_and_the_option(values, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"generator 'example': {message}")):
        check_values(declared_options(Example, "generator"), values, "generator 'example'")


def test_ints_pass_for_floats_and_lists_for_tuples():
    checked = check_values(declared_options(Example, "generator"), {"lr": 1, "scale": [0.2, 1.0]}, "x")
    assert checked == {"lr": 1, "scale": (0.2, 1.0)}


def test_dataset_entries_of_a_preset_override_its_own():
    assert component_preset(Example, "gpu", "pacs") == {"epochs": 70, "lr": 2e-3}
    assert component_preset(Example, "gpu", "vlcs") == {"epochs": 70}
    assert component_preset(Example, "cpu", "pacs") == {"epochs": 2}


def test_plugins_options_lists_types_defaults_and_presets(capsys, install_plugin):
    assert cli.main(["plugins", "--options", "cgan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("generator cgan (plugin cgan): ")
    assert "  epochs             int (>= 1)                   default 70; gpu: 70, cpu: 12" in out
    assert "  grad_clip          dict or str or None          default None; gpu: 'official'" in out
    assert "  update             str (one of 'd-first', 'g-first') default 'g-first'; gpu: 'd-first'" in out
    assert "                     training epochs (one pass over the training images each" in out  # its description
    # a preset value of one dataset (no built-in has one since the gpu preset became the released scripts')
    install_plugin("pg_per_dataset", stub_generator_plugin("per-dataset", "lr: float = 1e-3",
                                                           presets={"gpu": {"lr": 2e-4}, "gpu/pacs": {"lr": 2e-3}}))
    assert cli.main(["plugins", "--options", "per-dataset"]) == 0
    assert "default 0.001; gpu: 0.0002, gpu/pacs: 0.002" in capsys.readouterr().out
    assert cli.main(["plugins", "--options", "coop"]) == 0  # a prompt learner and a method share the name
    out = capsys.readouterr().out
    assert "prompt learner coop (plugin coop)" in out and "method coop (plugin coop): 1 option" in out
    assert cli.main(["plugins", "--options", "nope"]) == 2


def test_set_parses_toml_values_and_names_a_malformed_setting():
    assert parse_settings(["coop.epochs=2", "cgan.lr=2e-3", "coop.ctx_init=a photo of a", "x.flag=true",
                           "digits-dg.per_class = 20"]) == {
        "coop": {"epochs": 2, "ctx_init": "a photo of a"}, "cgan": {"lr": 2e-3}, "x": {"flag": True},
        "digits-dg": {"per_class": 20}}
    with pytest.raises(ConfigError, match="--set 'epochs=2': expected COMPONENT.OPTION=VALUE"):
        parse_settings(["epochs=2"])


@pytest.mark.slow
def test_set_reaches_the_component_and_a_wrong_one_fails_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "coop", "--views", "1", "--quiet", "--out", str(out),
                     "--set", "digits-dg.per_class=5", "--set", "coop.epochs=1", "--set", "coop.warmup_epochs=0",
                     "--set", "coop.lr=0.01"]) == 0
    import json

    options = json.loads((out / "config.json").read_text())["options"]["prompt_learner/coop"]
    assert options["epochs"] == 1 and options["lr"] == 0.01
    for setting, message in (("coop.epocs=1", "coop: unknown option 'epocs'"),
                             ("coop.epochs=one", "option 'epochs' must be int, got 'one'")):
        assert cli.main(["train", "--target", "photo", "--method", "coop", "--quiet", "--out", str(tmp_path / "bad"),
                         "--set", setting]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
