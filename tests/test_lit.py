"""The second edition of tiny-clip-digits: LiT (text tower only) and web-like captions."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from promptgen.storage.cache import FeatureCache
from promptgen_digits import world
from promptgen_digits.backbone import WEIGHTS, TinyClipDigits
from promptgen_digits.lit import CHECKPOINT, LitConfig, same_image_tower, train_text_tower

TINY = dict(steps=6, batch_size=16, warmup_steps=1, pool_size=48, checkpoint_every=2)


def _near_copy(word: str) -> re.Pattern:
    """The evaluation prompt "a photo of a {word}." and its near-copies (another article, picture/image, no period)."""
    return re.compile(rf"^(a |an |the )?(photo|picture|image|photograph) of (a |an |the )?{word}\.?$")


def test_web_captions_never_copy_the_evaluation_prompt_and_mix_as_documented():
    rng = np.random.default_rng(0)
    kinds = {"unnamed": 0, "wrong": 0, "named": 0}
    for _ in range(6000):
        label = int(rng.integers(10))
        style = world.PRETRAIN_STYLES[int(rng.integers(len(world.PRETRAIN_STYLES)))]
        caption = world.web_caption(label, style, "DejaVuSans.ttf", rng)
        for digit, word in enumerate(world.CLASSES):
            assert not _near_copy(word).match(caption) and not _near_copy(str(digit)).match(caption), caption
        named = [d for d, w in enumerate(world.CLASSES) if re.search(rf"\b({w}|{d})\b", caption)]
        kinds["unnamed" if not named else "named" if named == [label] else "wrong"] += 1
    for kind, share in world.WEB_CAPTION_MIX.items():
        assert abs(kinds[kind] / 6000 - share) < 0.025, (kind, kinds)


def test_the_first_edition_captions_still_contain_the_evaluation_prompt():
    # the reason for the second edition: the first edition's text tower was taught the evaluation prompt itself
    assert world.EVALUATION_PROMPT in world.GENERIC_CAPTIONS


@pytest.mark.slow
def test_a_resumed_lit_run_gives_the_weights_of_an_uninterrupted_one(tmp_path):
    config = LitConfig(**TINY)
    whole = train_text_tower(config, tmp_path / "whole", cache_dir=tmp_path, progress=False)
    assert train_text_tower(config, tmp_path / "resumed", cache_dir=tmp_path, progress=False, stop_after=3) is None
    assert (tmp_path / "resumed" / CHECKPOINT).exists()
    resumed = train_text_tower(config, tmp_path / "resumed", cache_dir=tmp_path, progress=False)
    a = load_file(tmp_path / "whole" / whole["weights"])
    b = load_file(tmp_path / "resumed" / resumed["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / CHECKPOINT).exists()  # a finished run leaves no checkpoint to resume
    # the text tower trained; the image tower is the locked one, bit for bit
    assert same_image_tower(tmp_path / "whole" / whole["weights"], WEIGHTS)
    shipped = load_file(WEIGHTS)
    assert not torch.equal(a["token_embedding.weight"], shipped["token_embedding.weight"])


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train_text_tower(LitConfig(**TINY), tmp_path / "run", cache_dir=tmp_path, progress=False, stop_after=2)
    from promptgen.errors import ConfigError

    with pytest.raises(ConfigError, match="lit-checkpoint.safetensors belongs to another run"):
        train_text_tower(LitConfig(**{**TINY, "lr": 2e-3}), tmp_path / "run", cache_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_a_text_only_retrain_encodes_no_image_twice(tmp_path, monkeypatch):
    """The pool's features and every dataset's are keyed by the image tower: a retrained text tower reuses them."""
    from promptgen_digits.dataset import DigitsDG

    first = train_text_tower(LitConfig(**TINY), tmp_path / "a", cache_dir=tmp_path, progress=False)
    shipped = TinyClipDigits(device="cpu")
    digits = DigitsDG(options=DigitsDG.Options(per_class=5, cache_dir=tmp_path))
    samples = digits.samples("photo", "test")
    with FeatureCache(tmp_path) as cache:
        before = cache.get(shipped, digits, "digits-dg", samples, progress=False)

    calls = []
    original = TinyClipDigits.encode_images
    monkeypatch.setattr(TinyClipDigits, "encode_images", lambda self, pixels: calls.append(len(pixels)) or
                        original(self, pixels))
    train_text_tower(LitConfig(**{**TINY, "seed": 1}), tmp_path / "b", cache_dir=tmp_path, progress=False)
    retrained = TinyClipDigits(pretrained=str(tmp_path / "a" / first["weights"]), device="cpu")
    assert retrained.fingerprint != shipped.fingerprint
    assert retrained.image_fingerprint == shipped.image_fingerprint
    with FeatureCache(tmp_path) as cache:
        after = cache.get(retrained, digits, "digits-dg", samples, progress=False)
    assert calls == []
    assert torch.equal(before.features, after.features)


@pytest.mark.slow
def test_world_report_reproduces_the_shipped_card(capsys):
    """`promptgen world report --json` on the shipped weights gives the card's figures (±0.5 points)."""
    import json

    from promptgen import cli
    from promptgen_digits.backbone import CARD

    card = json.loads(CARD.read_text())
    assert cli.main(["world", "report", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fingerprint"] == card["fingerprint"]
    assert set(report["datasets"]) == set(card["world_report"]) == {"digits-dg", "digits-traps"}
    for name, part in card["world_report"].items():
        for table in ("zero_shot", "in_domain_probe", "cross_domain_probe"):
            for domain, expected in part[table].items():
                assert abs(100 * report["datasets"][name][table][domain] - 100 * expected) <= 0.5, (name, table, domain)
        for template, values in part["templates"].items():
            for domain, expected in values.items():
                assert abs(100 * report["datasets"][name]["templates"][template][domain] - 100 * expected) <= 0.5


@pytest.mark.slow
def test_world_pretrain_text_only_through_the_cli_writes_weights_and_a_card(tmp_path, capsys):
    import json

    from promptgen import cli

    out = tmp_path / "weights"
    assert cli.main(["world", "pretrain", "--text-only", "--steps", "2", "--batch-size", "16", "--pool-size", "48",
                     "--out", str(out)]) == 0
    card = json.loads((out / "tiny-clip-digits.json").read_text())
    assert card["edition"] == 2 and card["config"]["captions"] == "web" and card["config"]["steps"] == 2
    assert card["command"].startswith("promptgen world pretrain --text-only")
    assert card["image_fingerprint"] == TinyClipDigits(device="cpu").image_fingerprint
    assert card["locked_image_tower"]["image_fingerprint"] == card["image_fingerprint"]
    assert set(card["world_report"]) == {"digits-dg", "digits-traps"} and card["wall_time_s"] > 0
    assert same_image_tower(out / "tiny-clip-digits.safetensors", WEIGHTS)
    assert "wrote" in capsys.readouterr().out
