"""Configuration objects fail where they are built, naming the field and the allowed values; building one
imports no plugin; a run's config round-trips through JSON."""

import json
import subprocess
import sys

import pytest

from promptgen.runs.config import BackboneConfig, RunConfig, from_dict
from promptgen.errors import ConfigError


@pytest.mark.parametrize(
    "build, field, allowed",
    [
        (lambda: RunConfig(targets="photo", seed=-1), "RunConfig.seed", "integer >= 0"),
        (lambda: RunConfig(targets="photo", seed=2**70), "RunConfig.seed", "<= 4294967295"),
        (lambda: RunConfig(targets="photo", seed=True), "RunConfig.seed", "integer >= 0"),
        (lambda: RunConfig(targets="photo", views=0), "RunConfig.views", "integer >= 1"),
        (lambda: RunConfig(targets="photo", preset="fast"), "RunConfig.preset", "auto, cpu, gpu"),
        (lambda: RunConfig(targets=()), "RunConfig.targets", "one or more non-empty names"),
        (lambda: RunConfig(targets="photo", overrides={"coop": 3}), "RunConfig.overrides", "tables of option values"),
        (lambda: BackboneConfig(model="x", precision="fp8"), "BackboneConfig.precision", "auto, fp32, bf16, fp16"),
        (lambda: BackboneConfig(model="x", device="gpu"), "BackboneConfig.device", "auto, cpu, cuda, cuda:N, mps"),
    ],
)
def test_bad_value_names_field_and_allowed_values(build, field, allowed):
    with pytest.raises(ConfigError) as caught:
        build()
    assert field in str(caught.value) and allowed in str(caught.value)


def test_from_dict_builds_configs_and_names_unknown_keys():
    config = from_dict(RunConfig, {"targets": ["photo"], "seed": 3, "backbone": {"device": "cpu"}})
    assert config == RunConfig(targets=("photo",), seed=3, backbone=BackboneConfig(device="cpu"))
    with pytest.raises(ConfigError, match="unknown field.*seeds.*allowed: targets"):
        from_dict(RunConfig, {"targets": ["photo"], "seeds": 3})
    with pytest.raises(ConfigError, match="RunConfig: missing field.*targets"):
        from_dict(RunConfig, {"seed": 3})
    with pytest.raises(ConfigError, match="BackboneConfig.precision"):
        from_dict(BackboneConfig, {"model": "pg-tiny-vit-w64", "precision": "half"})


def test_a_run_config_round_trips_through_json_and_its_identity_leaves_out_where_it_reads():
    config = RunConfig(targets="photo", method="coop", overrides={"coop": {"epochs": 2}}, cache_dir="/tmp/c",
                       data_root="/data", num_workers=2)
    assert from_dict(RunConfig, json.loads(json.dumps(config.to_dict()))) == config
    assert {"cache_dir", "data_root", "num_workers"} & set(config.identity()) == set()
    assert config.identity()["overrides"] == {"coop": {"epochs": 2}}


def test_building_a_config_imports_no_plugin_and_checks_no_name():
    code = ("import sys; from promptgen.runs.config import RunConfig; "
            "c = RunConfig(targets='nowhere', method='no-such-method', backbone={'name': 'no-such-backbone'}); "
            "print(sorted(m for m in sys.modules if m.startswith('promptgen_')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
