"""The plugin example in docs/plugins.md works exactly as written."""

import re
from pathlib import Path

import torch

from promptgen.registry import load_registry
from promptgen.values import FeatureSet, PromptLabel

DOC = Path(__file__).parents[1] / "docs" / "plugins.md"


def _block_after(marker: str, language: str) -> str:
    text = DOC.read_text()
    start = text.index(marker)
    return re.search(rf"```{language}\n(.*?)```", text[start:], re.S).group(1)


def test_generator_plugin_example_installs_and_learns(install_plugin):
    source = _block_after("`promptgen_nearest_domain.py`:", "python")
    entry_point = re.search(r"\n(\w+) = \"promptgen_nearest_domain\"", _block_after("`pyproject.toml` of your package:", "toml"))
    install_plugin("promptgen_nearest_domain", source, entry_point=entry_point.group(1))

    registry = load_registry()
    assert registry.get("generator", "nearest-domain").plugin == "nearest_domain"
    generator = registry.create("generator", "nearest-domain", feature_dim=2, n_ctx=1, ctx_dim=3)

    labels = [PromptLabel(ctx=torch.full((1, 3), float(d)), fingerprint="f", domain=str(d), class_names=["a"]) for d in range(2)]
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train = FeatureSet(features, torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 1, 1]))
    generator.fit(None, train, labels, None)
    prompts = generator.sample(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert prompts.shape == (2, 1, 3)
    assert prompts[:, 0, 0].tolist() == [1.0, 0.0]
