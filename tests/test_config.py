"""Configuration objects fail where they are built, naming the field and the allowed values."""

import pytest

from promptgen.config import BackboneConfig, GeneratorConfig, PromptConfig, TrainConfig, from_dict
from promptgen.errors import ConfigError


@pytest.mark.parametrize(
    "build, field, allowed",
    [
        (lambda: TrainConfig(epochs=-1), "TrainConfig.epochs", "integer >= 0"),
        (lambda: TrainConfig(batch_size=0), "TrainConfig.batch_size", "integer >= 1"),
        (lambda: TrainConfig(lr=0.0), "TrainConfig.lr", "number > 0"),
        (lambda: TrainConfig(epochs=2.5), "TrainConfig.epochs", "integer >= 0"),
        (lambda: TrainConfig(epochs=True), "TrainConfig.epochs", "integer >= 0"),
        (lambda: PromptConfig(n_ctx=0), "PromptConfig.n_ctx", "integer >= 1"),
        (lambda: BackboneConfig(model="x", precision="fp8"), "BackboneConfig.precision", "auto, fp32, bf16, fp16"),
        (lambda: BackboneConfig(model="x", device="gpu"), "BackboneConfig.device", "auto, cpu, cuda, cuda:N, mps"),
        (lambda: BackboneConfig(model="x", name="nope"), "BackboneConfig.name", "registered: openclip"),
    ],
)
def test_bad_value_names_field_and_allowed_values(build, field, allowed):
    with pytest.raises(ConfigError) as caught:
        build()
    assert field in str(caught.value) and allowed in str(caught.value)


def test_unknown_generator_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"GeneratorConfig.name: unknown generator 'gan'; registered:"):
        GeneratorConfig(name="gan")


def test_from_dict_builds_configs_and_names_unknown_keys():
    config = from_dict(TrainConfig, {"epochs": 3, "lr": 0.1})
    assert config == TrainConfig(epochs=3, lr=0.1)
    with pytest.raises(ConfigError, match="unknown field.*epoch.*allowed: epochs"):
        from_dict(TrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="BackboneConfig.precision"):
        from_dict(BackboneConfig, {"model": "pg-tiny-vit-w64", "precision": "half"})
