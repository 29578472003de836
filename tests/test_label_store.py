"""The prompt-label store: a label is named by all it depends on, fitted once, read back, never trusted damaged."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import attrs
import pytest
import torch

from promptgen.storage import label_store
from promptgen.toolkit import PromptLabel
from promptgen_colors.dataset import ColorsDataset

DATASET = ColorsDataset(options=ColorsDataset.Options(per_class=3))  # 16 train and 8 val images per domain
DOMAIN = DATASET.domains[0]
TRAIN = DATASET.samples(DOMAIN, "train")
VAL = DATASET.samples(DOMAIN, "val")
CLASSES = tuple(DATASET.classes)


def make_run(tmp_path, backbone, *, options=None, classes=CLASSES, reuse_labels=True, **changes):
    """What label_key and fetch_or_fit read of a run (promptgen.runs.context.RunContext), and nothing more."""
    chosen = {"seed": 0, "epochs": 2, "progress": False, "cache_dir": str(tmp_path), **(options or {})}
    run = SimpleNamespace(
        options=lambda kind, name: dict(chosen), classes=classes, views=1, epoch="images", backbone=backbone,
        config=SimpleNamespace(backbone=SimpleNamespace(precision="fp32"), cache_dir=str(tmp_path)),
        reuse_labels=reuse_labels,
    )
    for name, value in changes.items():
        setattr(run, name, value)
    return run


def key_of(run, train=TRAIN, val=VAL, domain=DOMAIN, learner="coop"):
    return label_store.label_key(run, learner, domain, train, val)


class Fit:
    """A stand-in for stage I training: a fresh random label per call, counted."""

    def __init__(self, run, domain=DOMAIN):
        self.run, self.domain, self.calls = run, domain, 0

    def __call__(self) -> PromptLabel:
        self.calls += 1
        return PromptLabel(ctx=torch.randn(4, 8), fingerprint=self.run.backbone.fingerprint, domain=self.domain,
                           class_names=self.run.classes, metadata={"best_epoch": self.calls})


def folder_of(run, key):
    return label_store.store_dir(run.config.cache_dir) / key


def test_a_label_is_fitted_once_and_read_back_unchanged(tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone)
    key, fit = key_of(run), Fit(run)
    first = label_store.fetch_or_fit(run, key, fit)
    second = label_store.fetch_or_fit(run, key, fit)
    assert fit.calls == 1
    assert torch.equal(first.ctx, second.ctx)
    assert (second.domain, second.class_names, second.fingerprint) == (DOMAIN, CLASSES, tiny_backbone.fingerprint)
    assert second.metadata["best_epoch"] == 1  # the fit's own metadata travels with the label
    assert first.metadata["stage1_store"] == {"key": key, "reused": False, "from": str(folder_of(run, key))}
    assert second.metadata["stage1_store"] == {"key": key, "reused": True, "from": str(folder_of(run, key))}
    assert not list(folder_of(run, key).parent.glob(".*partial*"))  # nothing half-written left beside it


def test_the_same_inputs_give_the_same_key_and_what_only_reports_or_places_changes_nothing(tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone)
    quiet_elsewhere = make_run(tmp_path / "elsewhere", tiny_backbone, options={"progress": True})
    assert key_of(run) == key_of(make_run(tmp_path, tiny_backbone)) == key_of(quiet_elsewhere)


@pytest.mark.parametrize("change", [
    "image", "label", "val", "domain", "learner", "seed", "classes", "views", "epoch", "precision", "backbone",
])
def test_a_changed_input_gives_another_key(change, tiny_backbone, tiny_backbone_wide, tmp_path):
    run = make_run(tmp_path, tiny_backbone)
    before = key_of(run)
    train, val, domain, learner = list(TRAIN), list(VAL), DOMAIN, "coop"
    if change == "image":  # the pixels changed: the sample's version says so
        train[0] = attrs.evolve(train[0], version=train[0].version + "-edited")
    elif change == "label":
        train[0] = attrs.evolve(train[0], label=(train[0].label + 1) % len(CLASSES))
    elif change == "val":
        val = val[1:]
    elif change == "domain":
        domain = DATASET.domains[1]
    elif change == "learner":
        learner = "other-learner"
    elif change == "seed":
        run = make_run(tmp_path, tiny_backbone, options={"seed": 1})
    elif change == "classes":
        run = make_run(tmp_path, tiny_backbone, classes=CLASSES[::-1])
    elif change == "views":
        run = make_run(tmp_path, tiny_backbone, views=2)
    elif change == "epoch":
        run = make_run(tmp_path, tiny_backbone, epoch="views")
    elif change == "precision":
        run = make_run(tmp_path, tiny_backbone, config=SimpleNamespace(backbone=SimpleNamespace(precision="bf16"),
                                                                        cache_dir=str(tmp_path)))
    elif change == "backbone":
        run = make_run(tmp_path, tiny_backbone_wide)
    assert key_of(run, train, val, domain, learner) != before


def test_a_label_for_other_inputs_is_fitted_not_reused(tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone)
    fit = Fit(run)
    label_store.fetch_or_fit(run, key_of(run), fit)
    edited = [attrs.evolve(TRAIN[0], version=TRAIN[0].version + "-edited"), *TRAIN[1:]]
    other = label_store.fetch_or_fit(run, key_of(run, edited), fit)
    assert fit.calls == 2 and other.metadata["stage1_store"]["reused"] is False


@pytest.mark.parametrize("damage", ["tensors garbled", "metadata garbled", "tensors missing", "metadata missing"])
def test_a_damaged_stored_label_is_reported_fitted_again_and_replaced(damage, tiny_backbone, tmp_path, caplog):
    run = make_run(tmp_path, tiny_backbone)
    key, fit = key_of(run), Fit(run)
    label_store.fetch_or_fit(run, key, fit)
    stem = folder_of(run, key) / "label"
    target = stem.with_suffix(".safetensors" if damage.startswith("tensors") else ".json")
    if damage.endswith("garbled"):
        target.write_bytes(b"\x00not what was written" * 3)
    else:
        target.unlink()
    with caplog.at_level(logging.WARNING, logger=label_store.__name__):
        again = label_store.fetch_or_fit(run, key, fit)
    assert fit.calls == 2 and again.metadata["stage1_store"]["reused"] is False
    assert again.metadata["best_epoch"] == 2  # the refit's label, not the damaged one's
    if damage != "metadata missing":  # without its .json the folder is not a label at all: replaced silently
        assert "unreadable" in caplog.text and str(folder_of(run, key)) in caplog.text
    third = label_store.fetch_or_fit(run, key, fit)  # the replacement was stored whole
    assert fit.calls == 2 and third.metadata["stage1_store"]["reused"] is True
    assert torch.equal(third.ctx, again.ctx)


@pytest.mark.parametrize("mismatch", ["fingerprint", "class_names"])
def test_a_stored_label_of_another_backbone_or_class_list_is_not_trusted(mismatch, tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone)
    key = key_of(run)
    wrong = {"fingerprint": "someone-else@0000", "class_names": CLASSES[::-1]}[mismatch]

    def fit_wrong():
        return attrs.evolve(Fit(run)(), **{mismatch: wrong})

    label_store.fetch_or_fit(run, key, fit_wrong)  # a store entry under this key that does not match the run
    fit = Fit(run)
    label = label_store.fetch_or_fit(run, key, fit)
    assert fit.calls == 1 and label.metadata["stage1_store"]["reused"] is False
    assert (label.fingerprint, label.class_names) == (tiny_backbone.fingerprint, CLASSES)


def test_a_label_another_job_stored_meanwhile_is_kept(tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone)
    key = key_of(run)
    theirs = attrs.evolve(Fit(run)(), metadata={"job": "theirs"})

    def fit_while_another_job_stores_it():
        label_store._store(theirs, folder_of(run, key))  # the other job finishes first
        return Fit(run)()

    mine = label_store.fetch_or_fit(run, key, fit_while_another_job_stores_it)
    assert mine.metadata["stage1_store"]["reused"] is False and "job" not in mine.metadata
    stored = label_store.fetch_or_fit(run, key, Fit(run))
    assert stored.metadata["job"] == "theirs" and torch.equal(stored.ctx, theirs.ctx)  # kept whole, not overwritten
    assert not list(folder_of(run, key).parent.glob(".*partial*"))


def test_without_reuse_every_label_is_fitted_and_none_stored(tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone, reuse_labels=False)
    key, fit = key_of(run), Fit(run)
    label_store.fetch_or_fit(run, key, fit)
    label = label_store.fetch_or_fit(run, key, fit)
    assert fit.calls == 2 and "stage1_store" not in label.metadata
    assert not label_store.store_dir(run.config.cache_dir).exists()


@pytest.mark.parametrize("how", ["fitted and stored", "loaded", "fitted without reuse"])
def test_the_global_random_state_is_the_same_whether_a_label_was_fitted_or_loaded(how, tiny_backbone, tmp_path):
    run = make_run(tmp_path, tiny_backbone, reuse_labels=how != "fitted without reuse")
    key, fit = key_of(run), Fit(run)  # Fit draws random numbers
    if how == "loaded":
        label_store.fetch_or_fit(run, key, fit)
    torch.manual_seed(123)
    label_store.fetch_or_fit(run, key, fit)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))
    assert fit.calls == 1
