"""The official epoch and schedule (docs/parity.md rows 1, 7, 8): an epoch is one pass over the training images,
each through one of its cached views, in floor(N / batch) steps (Dassl's drop_last), for every prompt learner,
generator and feature baseline; the learning rate follows Dassl's per-epoch scheduler."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from promptgen.runs.config import RunConfig
from promptgen.components.resolve import Settings, set_options
from promptgen.runs.engine import run
from promptgen.toolkit.epochs import Epochs, steps_per_epoch
from promptgen.components.registry import load_registry
from promptgen.toolkit.lr_schedules import dassl_lr
from promptgen.toolkit.generator_training import Trainer, train_epochs
from promptgen.values import FeatureSet, PromptLabel

REGISTRY = load_registry()


def _train(images: int, views: int, dim: int = 64, classes: int = 3, domains: int = 1) -> FeatureSet:
    """View-major features of ``images`` images x ``views`` views, as the feature cache returns them."""
    torch.manual_seed(0)
    labels = (torch.arange(images) % classes).repeat(views)
    domain_ids = (torch.arange(images) % domains).repeat(views)
    features = torch.nn.functional.normalize(torch.randn(images * views, dim), dim=-1)
    return FeatureSet(features, labels, domain_ids, image_ids=torch.arange(images).repeat(views))


def test_an_epoch_is_floor_n_over_batch_steps_of_one_view_per_image():
    train = _train(images=70, views=8)
    epochs = Epochs(train, 32, torch.Generator().manual_seed(0))
    assert (epochs.images, epochs.views, epochs.steps) == (70, 8, 2)  # Dassl drops the last 6 images each epoch
    assert [len(batch) for batch in epochs.next()] == [32, 32]
    assert steps_per_epoch(70, 32) == 2 and steps_per_epoch(20, 32) == 1 and steps_per_epoch(0, 32) == 0
    assert [len(b) for b in Epochs(_train(20, 2), 32, torch.Generator()).next()] == [20]  # no full batch: one of all
    # "views": every row an image of its own, so an epoch iterates all 8 x 70 cached views
    assert Epochs(attrs.evolve(train, image_ids=None), 32, torch.Generator()).steps == 560 // 32


def test_each_view_of_each_image_is_drawn_once_over_views_epochs():
    images, views = 64, 8  # 64 = 2 x 32: nothing dropped, every image visited every epoch
    train = _train(images, views)
    epochs = Epochs(train, 32, torch.Generator().manual_seed(3))
    drawn = [torch.cat(epochs.next()) for _ in range(views)]
    for rows in drawn:  # one view of every image per epoch
        assert sorted(train.image_ids[rows].tolist()) == list(range(images))
    assert sorted(torch.cat(drawn).tolist()) == list(range(images * views))  # every (image, view) once in 8 epochs
    again = Epochs(train, 32, torch.Generator().manual_seed(3))
    assert all(torch.equal(torch.cat(again.next()), rows) for rows in drawn)  # seeded


@pytest.mark.slow
def test_the_run_groups_train_views_by_image_unless_its_epoch_is_views(tmp_path):
    from promptgen.runs.engine import prepare
    from promptgen.storage.cache import FeatureCache

    config = RunConfig(targets="photo", method="coop", preset="gpu", views=2, backbone={"device": "cpu"},
                       overrides={"digits-dg": {"per_class": 5}})
    with FeatureCache(tmp_path / "cache") as cache:
        for epoch, grouped in ((None, True), ("views", False)):
            _, context = prepare(attrs.evolve(config, epoch=epoch), REGISTRY, False, cache)
            train, images = context.features("train"), len(context.samples("train"))
            assert context.epoch == ("images" if grouped else "views")
            assert len(train) == 2 * images
            if grouped:
                assert torch.equal(train.image_ids, torch.arange(images).repeat(2))
            else:
                assert train.image_ids is None
            assert context.features("val").image_ids is None


@pytest.mark.parametrize("warmup_type, expected", [
    ("linear", {0: 1e-5, 1: 5e-4, 3: 1.5e-3}),  # stage II (spg.yaml:21-25: linear, Dassl's WARMUP_MIN_LR 1e-5)
    ("constant", {0: 1e-5, 1: 1e-5, 3: 1e-5}),  # stage I (CoOp's constant warm-up at 1e-5)
])
def test_the_lr_of_each_epoch_is_dassls_scheduler(warmup_type, expected):
    """Warm-up 4, 70 epochs, peak 2e-3; after the warm-up Dassl's successor CosineAnnealingLR(T_max=70) restarts
    from its epoch 0 (WARMUP_RECOUNT): compared with torch's own scheduler stepped as Dassl steps it."""
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=70)
    official = {}
    for epoch in range(4, 70):
        official[epoch] = cosine.get_last_lr()[0]
        reference.step()
        cosine.step()
    for epoch, lr in {**expected, 4: 2e-3, 40: 9.5514e-4, 69: 2.5072e-5}.items():
        assert dassl_lr(epoch, 70, 4, 2e-3, warmup_type, 1e-5) == pytest.approx(lr, rel=1e-4)
        if epoch >= 4:
            assert dassl_lr(epoch, 70, 4, 2e-3, warmup_type, 1e-5) == pytest.approx(official[epoch], rel=1e-9)


def test_the_generator_loop_sets_dassls_lr_once_per_epoch():
    train, seen = _train(images=64, views=2), []
    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.AdamW(net.parameters())

    def step(index, rng):
        seen.append(optimizer.param_groups[0]["lr"])
        return {}

    class Still:
        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    labels = [PromptLabel(torch.zeros(2, 8), "fp", "d", ("a", "b"))]
    backbone = type("B", (), {"device": torch.device("cpu"), "fingerprint": "fp"})()
    import promptgen.toolkit.generator_training as training

    real = training.PromptAssembler
    training.PromptAssembler = lambda *args: None  # no text encoder needed: the score is given
    try:
        report = train_epochs(Still(), backbone, train, labels, None, name="t", epochs=6, batch_size=32, lr=2e-3,
                              warmup_epochs=2, seed=0, progress=False, lr_schedule="epoch",
                              trainer=Trainer(step, [optimizer], [net], train.features), score=lambda: 0.5,
                              select_from=3)
    finally:
        training.PromptAssembler = real
    assert len(seen) == 6 * 2  # 64 images / 32: two steps per epoch, whatever the views
    assert seen == [dassl_lr(epoch, 6, 2, 2e-3, "linear") for epoch in range(6) for _ in range(2)]
    assert report["best_epoch"] == 3  # the same score every epoch: the earliest epoch allowed (select_from)


@pytest.fixture
def step_counter():
    steps = []
    handle = register_optimizer_step_post_hook(lambda *args: steps.append(1))
    yield steps
    handle.remove()


@pytest.mark.parametrize("learner", [name for name in REGISTRY.names("prompt_learner")
                                     if "epochs" in REGISTRY.get("prompt_learner", name).options])  # that train
def test_every_prompt_learner_takes_floor_n_over_batch_steps_per_epoch(learner, tiny_backbone, step_counter):
    values = {**set_options(REGISTRY, "prompt_learner", learner, Settings("gpu", None, {})), "epochs": 2,
              "warmup_epochs": 1, "progress": False}
    train = _train(images=70, views=8, dim=tiny_backbone.embed_dim)
    prompt_learner = REGISTRY.create("prompt_learner", learner, **values)
    prompt_learner.fit(tiny_backbone, ("zero", "one", "two"), train, None, "d")
    assert len(step_counter) == 2 * (70 // values["batch_size"])


@pytest.mark.slow
@pytest.mark.parametrize("generator", REGISTRY.names("generator"))
def test_every_generator_takes_floor_n_over_batch_steps_per_epoch(generator, tiny_backbone, monkeypatch):
    values = {**set_options(REGISTRY, "generator", generator, Settings("gpu", None, {})), "epochs": 2, "warmup_epochs": 1,
              "progress": False}
    made = REGISTRY.create("generator", generator, feature_dim=tiny_backbone.embed_dim, n_ctx=2,
                           ctx_dim=tiny_backbone.ctx_dim, **values)
    calls = []
    trainer = made.trainer

    def counted(*args):
        built = trainer(*args)
        return attrs.evolve(built, step=lambda index, rng: calls.append(len(index)) or built.step(index, rng))

    monkeypatch.setattr(made, "trainer", counted)
    train = _train(images=70, views=8, dim=tiny_backbone.embed_dim)
    labels = [PromptLabel(torch.randn(2, tiny_backbone.ctx_dim) * 0.02, tiny_backbone.fingerprint, "d",
                          ("zero", "one", "two"))]
    val = FeatureSet(train.features[:6], train.labels[:6], train.domain_ids[:6])
    made.fit(tiny_backbone, train, labels, val)
    batch = made.schedule.batch_size
    assert calls == [batch] * (2 * (70 // batch))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cocoop", "dpl"])
def test_feature_baselines_take_floor_n_over_batch_steps_per_epoch(method, tmp_path, step_counter):
    config = RunConfig(targets="photo", method=method, preset="gpu", views=2, backbone={"device": "cpu"},
                       overrides={"digits-dg": {"per_class": 8}, method: {"epochs": 1, "warmup_epochs": 0,
                                                                         "batch_size": 8}})
    metrics = run(config, tmp_path / method, registry=REGISTRY, progress=False)
    sizes = metrics["sizes"]["train"]  # images, not views
    if method == "dpl":  # batches of one domain each
        per_domain = sizes // 3
        assert len(step_counter) == 3 * (per_domain // 8)
    else:
        assert len(step_counter) == sizes // 8
    assert math.isfinite(metrics["test_accuracy"]["photo"])


def test_spgs_stage_one_runs_the_released_scripts_overrides_and_the_coop_baseline_its_own_config():
    """Row 8: train.py forces weight decay 1e-4 and 4 warm-up epochs on SPG's stage I; the CoOp baseline keeps
    b32_ep50.yaml's 5e-4 and 1; both keep the earlier of two equal epochs (the gpu preset)."""
    assert REGISTRY.create("method", "spg").options.learner == "spg-coop"
    stage_one = set_options(REGISTRY, "prompt_learner", "spg-coop", Settings("gpu", "pacs", {}))
    baseline = set_options(REGISTRY, "prompt_learner", "coop", Settings("gpu", "pacs", {}))
    assert {k: stage_one[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs")} == \
        {"epochs": 50, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 4}
    assert REGISTRY.get("prompt_learner", "coop").options["weight_decay"].default == 5e-4
    assert "weight_decay" not in baseline and "warmup_epochs" not in baseline
    # coop's settings reach SPG's stage I as before (suites and docs set coop.epochs); spg-coop's only it
    both = {"coop": {"epochs": 2, "lr": 0.5}, "spg-coop": {"lr": 0.1}}
    assert {k: v for k, v in set_options(REGISTRY, "prompt_learner", "spg-coop", Settings("cpu", None, both)).items()
            if k in ("epochs", "lr")} == {"epochs": 2, "lr": 0.1}
    assert set_options(REGISTRY, "prompt_learner", "coop", Settings("cpu", None, both))["lr"] == 0.5


def test_every_loop_keeps_the_earlier_of_two_equal_epochs():
    """One selection rule (promptgen.toolkit.best_epoch.BestEpoch): the prompt loop and the generator loop keep the
    earlier of two equal scores, report it under the same names, and a NaN score (no val) keeps the last."""
    from promptgen.toolkit.prompt_training import train_prompts
    from promptgen.toolkit.best_epoch import BestEpoch

    scores = iter([0.2, 0.5, 0.4, 0.5])
    module = torch.nn.Linear(1, 1)
    result = train_prompts(module, batches=lambda: [None], steps=1, loss=lambda batch: module.weight.sum(),
                           score=lambda: next(scores), epochs=4, lr=0.1, warmup_epochs=0, warmup_lr=1e-5,
                           momentum=0.9, weight_decay=0.0, progress=False, desc="t")
    assert (result["best_epoch"], result["best_score"]) == (1, 0.5)
    best = BestEpoch(select_from=1)
    for epoch, score in enumerate([0.9, 0.3, 0.6, 0.6, float("nan")]):
        best.offer(epoch, score, lambda: {"epoch": epoch})
    assert best.report() == {"best_epoch": 4, "best_score": best.score} and best.state == {"epoch": 4}
    best = BestEpoch()
    for epoch, score in enumerate([0.3, 0.6, 0.6]):
        best.offer(epoch, score, lambda: {"epoch": epoch})
    assert best.report() == {"best_epoch": 1, "best_score": 0.6}


def test_the_epoch_is_set_from_the_cli_and_a_suite_and_recorded(tmp_path, capsys):
    from benchmarks import suites
    from promptgen import cli

    for flag, shown in (([], "an epoch over the views"), (["--epoch", "images"], "an epoch over the images")):
        assert cli.main(["train", "--target", "photo", "--dry-run", "--preset", "cpu", *flag]) == 0
        assert shown in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "--target", "photo", "--dry-run", "--epoch", "image"])
    assert exit.value.code == 2 and "invalid choice: 'image' (choose from 'images', 'views')" in capsys.readouterr().err
    suite = tmp_path / "over-images.toml"
    suite.write_text('description = "coop, an epoch over the images"\ndataset = "digits-dg"\n'
                     'protocol = "multi-source"\nmethods = ["coop"]\nseeds = [0]\npreset = "cpu"\nepoch = "images"\n')
    assert suites.load(str(suite)).example().epoch == "images"
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "coop", "--epoch", "images", "--views", "2", "--quiet",
                     "--out", str(out), "--set", "digits-dg.per_class=5", "--set", "coop.epochs=2"]) == 0
    import json

    assert json.loads((out / "metrics.json").read_text())["epoch"] == "images"
