"""DPSPG as a plugin: the negative prompt learner, the transformer generator, the dual-path methods, their
files and their bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from promptgen import cli
from promptgen.runs.config import RunConfig
from promptgen.runs.engine import evaluate_run, run
from promptgen.toolkit.evaluate import accuracy, prompt_logits
from promptgen.toolkit.prompts import PromptAssembler, phrase_embedding
from promptgen.components.registry import load_registry
from promptgen.values import FeatureSet

REGISTRY = load_registry()
SMALL = {"digits-dg": {"per_class": 10}, "coop": {"epochs": 2}, "negative-coop": {"epochs": 2},
         "transformer": {"epochs": 2}, "cgan": {"epochs": 2}}


def _config(method: str, **overrides) -> RunConfig:
    return RunConfig(targets="photo", method=method, preset="cpu", views=1, backbone={"device": "cpu"},
                     overrides={**SMALL, **overrides})


def test_the_plugin_registers_its_parts_through_the_hooks():
    assert {"dpspg", "dpspg-positive", "spg-cgan+neg", "spg-cvae+neg", "spg-transformer"} <= set(REGISTRY.names("method"))
    assert REGISTRY.canonical("method", "spg-transformer+neg") == "dpspg"
    assert REGISTRY.get("prompt_learner", "negative-coop").plugin == "dpspg"
    assert REGISTRY.get("generator", "transformer").plugin == "dpspg"


@pytest.mark.slow
def test_the_negative_learner_learns_to_rank_the_true_class_last_on_a_toy_problem(tiny_backbone):
    """A toy problem: each image feature is its class's text feature plus noise, so the initial
    "a photo without a" ranks the true class *first* (a random text encoder does not know "without").
    The BCE against the complementary labels must fall and the learned context must rank the true class
    last on images it never saw (chance: 1 in 5). It takes a small step and many epochs: with lr 0.02 the
    context only shifts every logit alike (measured: the argmin accuracy stays at 0.00-0.21)."""
    from promptgen_dpspg.negative import NegativeCoOp

    classes = ["cat", "dog", "bird", "fish", "frog"]
    text = tiny_backbone.encode_text([f"a photo of a {name}." for name in classes])

    def images(n: int, seed: int) -> FeatureSet:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % len(classes)
        noisy = text[labels] + 0.05 * torch.randn(n, text.shape[1], generator=g)
        return FeatureSet(torch.nn.functional.normalize(noisy, dim=1), labels, torch.zeros(n, dtype=torch.long))

    train, val, test = images(200, 0), images(200, 1), images(200, 2)
    learner = NegativeCoOp(NegativeCoOp.Options(epochs=40, warmup_epochs=0, lr=1e-3, progress=False))
    label = learner.fit(tiny_backbone, classes, train, val, "toy")
    history = label.metadata["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert label.metadata["config"]["n_ctx"] == label.n_ctx == 4  # "a photo without a"
    assembler = PromptAssembler(tiny_backbone, classes, label.n_ctx)
    with torch.no_grad():
        logits = prompt_logits(tiny_backbone, assembler, label.ctx, test.features)
        initial = prompt_logits(tiny_backbone, assembler, phrase_embedding(tiny_backbone, "a photo without a"),
                                test.features)
    assert NegativeCoOp.score(initial, test.labels) < 0.2  # the untrained prompt ranks the true class first
    assert NegativeCoOp.score(logits, test.labels) > 0.5  # learned: last, 2.5x chance or better
    # the score: the class whose "not" logit is lowest is the prediction
    toy = torch.tensor([[3.0, -1.0, 2.0], [0.5, 1.0, -2.0]])
    assert NegativeCoOp.score(toy, torch.tensor([1, 2])) == 1.0
    assert NegativeCoOp.score(toy, torch.tensor([0, 0])) == 0.0


@pytest.mark.slow
def test_dpspg_trains_saves_and_reloads_to_the_same_scores(tmp_path):
    out = tmp_path / "dpspg"
    metrics = run(_config("dpspg"), out, registry=REGISTRY, progress=False)
    assert (out / "prompt_labels_negative").is_dir() and (out / "generator_negative.safetensors").exists()
    again = evaluate_run(out, registry=REGISTRY)
    assert again["test_accuracy"] == metrics["test_accuracy"] and again["val_accuracy"] == metrics["val_accuracy"]
    history = json.loads((out / "history.json").read_text())
    assert {row["path"] for row in history} == {"positive", "negative"}


@pytest.mark.slow
def test_the_negative_path_changes_the_scores_and_alpha_zero_removes_it(tmp_path):
    dual = run(_config("spg-cgan+neg", **{"spg-cgan+neg": {"alpha": 0.0}}), tmp_path / "a0",
               registry=REGISTRY, progress=False)
    positive = run(_config("spg-cgan"), tmp_path / "spg", registry=REGISTRY, progress=False)
    # alpha = 0: the negative path is trained but weighs nothing; the positive path is SPG's CGAN exactly
    assert dual["test_accuracy"] == positive["test_accuracy"]


@pytest.mark.parametrize("alpha", ["1.5", "-0.1"])
def test_alpha_outside_zero_one_is_refused_before_any_work(capsys, alpha):
    assert cli.main(["train", "--method", "dpspg", "--target", "photo", "--set", f"dpspg.alpha={alpha}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "method 'dpspg' (plugin dpspg): option 'alpha' must be" in error[0]


@pytest.mark.slow
def test_a_run_saved_without_negatives_is_named_when_a_dual_path_method_loads_it(tmp_path, capsys):
    out = tmp_path / "dpspg"
    run(_config("dpspg"), out, registry=REGISTRY, progress=False)
    import shutil

    shutil.rmtree(out / "prompt_labels_negative")
    assert cli.main(["evaluate", str(out)]) in (1, 2)
    error = capsys.readouterr().err
    assert str(out) in error and ("prompt_labels_negative" in error or "negative prompt labels" in error)


# --- DPSPG's procedure as its code runs it (docs/parity.md, row 9): joint stage I, joint stage II, LATE ---------------


def _toy_images(backbone, classes, n: int, seed: int, views: int = 1) -> FeatureSet:
    """Each image feature is its class's text feature plus noise; ``views`` noisy rows per image (image_ids)."""
    text = backbone.encode_text([f"a photo of a {name}." for name in classes])
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(classes)).repeat(views)
    noisy = text[labels] + 0.05 * torch.randn(n * views, text.shape[1], generator=g)
    return FeatureSet(torch.nn.functional.normalize(noisy, dim=1), labels, torch.zeros(n * views, dtype=torch.long),
                      image_ids=torch.arange(n).repeat(views) if views > 1 else None)


@pytest.mark.slow
def test_joint_stage_one_learns_both_contexts_in_one_loop_and_selects_on_positive_minus_negative(tiny_backbone,
                                                                                                monkeypatch):
    """dpspg-coop: one train_prompts loop over a module holding both contexts; every optimizer step moves both;
    an epoch is one view of each image in floor(N / batch) steps; the kept epoch is the one whose
    positive - negative val accuracy is best, and the label carries the negative context of that same epoch."""
    import promptgen_dpspg.joint as joint
    from promptgen.toolkit.prompt_training import train_prompts

    classes = ["cat", "dog", "bird", "fish", "frog"]
    train = _toy_images(tiny_backbone, classes, 70, 0, views=2)  # 70 images, 2 cached views each
    val = _toy_images(tiny_backbone, classes, 40, 1)
    loops, snapshots = [], []

    def spy(module, *, loss, **keywords):
        loops.append(sorted(name for name, _ in module.named_parameters()))

        def watched(batch):
            snapshots.append((module.positive.detach().clone(), module.negative.detach().clone()))
            return loss(batch)

        return train_prompts(module, loss=watched, **keywords)

    monkeypatch.setattr(joint, "train_prompts", spy)
    learner = joint.DualCoOp(joint.DualCoOp.Options(epochs=3, batch_size=16, warmup_epochs=0, lr=1e-2,
                                                     progress=False))
    label = learner.fit(tiny_backbone, classes, train, val, "toy")

    assert loops == [["negative", "positive"]]  # one loop, both contexts in it
    steps = 70 // 16  # Dassl's drop_last over the images (not the 140 cached rows)
    assert label.metadata["steps"] == len(snapshots) == 3 * steps
    for (p0, n0), (p1, n1) in zip(snapshots, snapshots[1:]):  # each step changed both contexts
        assert not torch.equal(p0, p1) and not torch.equal(n0, n1)
    history = label.metadata["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    for row in history:  # the loss minimised is the sum of CoOp's CE and the negative BCE
        assert row["train_loss"] == pytest.approx(row["positive_loss"] + row["negative_loss"], rel=1e-5)

    positive, negative = joint.split_label(label)
    assert "negative_ctx" not in positive.metadata and negative.metadata["negative"] is True
    assert positive.n_ctx == 4 and negative.n_ctx == 4  # "a photo of a", "a photo without a"
    with torch.no_grad():
        logits = {name: prompt_logits(tiny_backbone, PromptAssembler(tiny_backbone, classes, lab.n_ctx), lab.ctx,
                                      val.features) for name, lab in (("p", positive), ("n", negative))}
    kept = joint.DualCoOp.score(logits["p"], logits["n"], val.labels)
    best = label.metadata["best_epoch"]
    assert kept == pytest.approx(label.metadata["val_joint_accuracy"]) == pytest.approx(
        history[best]["val_joint_accuracy"])
    assert history[best]["val_joint_accuracy"] == max(row["val_joint_accuracy"] for row in history)


def test_the_joint_score_is_the_official_positive_minus_negative():
    from promptgen_dpspg.joint import DualCoOp

    labels = torch.tensor([0, 1])
    positive = torch.tensor([[2.0, 1.5, 0.0], [0.0, 1.0, 0.9]])
    negative = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    # alone, the positive logits get image 0 right and the negative (argmin) gets image 1 right; the
    # code's score (dpspg_coop.py:298, alpha = 1) ranks on positive - negative: [1.0, 1.5, 0] and [0, 0.5, 0.9]
    assert accuracy(positive, labels) == 1.0
    assert DualCoOp.score(positive, negative, labels) == 0.0
    assert DualCoOp.score(positive, torch.zeros_like(negative), labels) == 1.0


def test_the_negative_context_goes_through_the_label_files_exactly(tmp_path):
    """The joint label carries the negative context in its JSON metadata (what the label store writes): a float32
    read back is the same float32, so the negative label after a reload is bit-identical."""
    from promptgen.toolkit.checkpoints import load_prompt_label, save_prompt_label
    from promptgen.errors import PromptgenError
    from promptgen.values import PromptLabel
    from promptgen_dpspg.joint import NEGATIVE_CTX, split_label

    negative = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    label = PromptLabel(ctx=torch.randn(4, 64), fingerprint="f", domain="d", class_names=["a", "b"],
                        metadata={"learner": "dpspg-coop", "best_epoch": 3, NEGATIVE_CTX: negative.tolist()})
    save_prompt_label(label, tmp_path / "label")
    positive, again = split_label(load_prompt_label(tmp_path / "label"))
    assert torch.equal(again.ctx, negative) and torch.equal(positive.ctx, label.ctx)
    assert again.metadata["best_epoch"] == positive.metadata["best_epoch"] == 3  # selected together
    with pytest.raises(PromptgenError, match="dpspg-coop"):
        split_label(PromptLabel(ctx=torch.zeros(4, 64), fingerprint="f", domain="d", class_names=["a"]))


@pytest.mark.slow
def test_joint_stage_two_trains_both_generators_per_step_and_never_selects_before_late(tiny_backbone, monkeypatch):
    """Stage II joint: one epoch loop, every step a step of each path's generator, both kept from the same
    epoch; a score that is best at epoch 0 and falls after it still selects epoch ``late`` (the code's LATE)."""
    from types import SimpleNamespace

    from promptgen.values import PromptLabel
    from promptgen_dpspg.method import DualPath
    from promptgen_dpspg.transformer import TransformerGenerator

    classes, d = ("cat", "dog", "bird"), tiny_backbone.embed_dim
    g = torch.Generator().manual_seed(0)
    train = FeatureSet(torch.nn.functional.normalize(torch.randn(64, d, generator=g), dim=1), torch.arange(64) % 3,
                       torch.arange(64) % 2)
    labels = {path: [PromptLabel(ctx=torch.randn(2, tiny_backbone.ctx_dim, generator=g), fingerprint="f",
                                 domain=str(i), class_names=classes) for i in range(2)] for path in ("positive", "negative")}
    method = DualPath(DualPath.Options(stage1="joint", stage2="joint", late=3))
    method.labels = labels
    method.generators = {path: TransformerGenerator(d, 2, tiny_backbone.ctx_dim, TransformerGenerator.Options(
        layers=1, heads=1, feedforward=16, epochs=6, batch_size=16, warmup_epochs=1, lr_schedule="epoch", seed=i,
        progress=False))
                         for i, path in enumerate(("positive", "negative"))}
    initial = {path: {k: v.clone() for k, v in gen.state_dict().items()} for path, gen in method.generators.items()}
    seen = []

    def falling(run, val):  # best at epoch 0, worse every epoch after; records the state each epoch is scored in
        def score():
            seen.append({p: {k: v.clone() for k, v in gen.state_dict().items()} for p, gen in method.generators.items()})
            return 1.0 - 0.1 * (len(seen) - 1)
        return score

    monkeypatch.setattr(DualPath, "_score", staticmethod(falling))
    report = method._fit_joint(SimpleNamespace(backbone=tiny_backbone, classes=classes, progress=False), train, train)

    assert report["joint"]["best_epoch"] == 3 and report["joint"]["best_score"] == pytest.approx(0.7)
    assert [row["epoch"] for row in report["history"]] == list(range(6))
    assert all({"loss_positive", "loss_negative"} <= set(row) and row["path"] == "joint" for row in report["history"])
    for path, generator in method.generators.items():  # both restored to the selected epoch, both trained
        state = generator.state_dict()
        assert all(torch.equal(state[k], seen[3][path][k]) for k in state)
        assert any(not torch.equal(state[k], initial[path][k]) for k in state)


def test_a_generator_without_a_trainer_is_trained_the_sequential_way():
    from promptgen.toolkit.generator_training import trains_in_loop
    from promptgen_dpspg.transformer import TransformerGenerator

    class OwnLoop:  # a third-party generator that trains itself
        options = {"epochs": 3}

        def fit(self, backbone, train, prompt_labels, val):
            return None

    assert not trains_in_loop(OwnLoop())
    options = TransformerGenerator.Options(layers=1, heads=1, feedforward=8, progress=False)
    assert trains_in_loop(TransformerGenerator(64, 2, 64, options))


def test_the_gpu_preset_is_the_official_procedure_and_cpu_keeps_the_earlier_one():
    from promptgen.components.resolve import Settings, effective_options

    def options(kind, name, preset):
        return effective_options(REGISTRY, kind, name, Settings(preset, "digits-dg", {}))

    gpu = options("method", "dpspg", "gpu")
    assert (gpu["stage1"], gpu["stage2"], gpu["late"], gpu["alpha"]) == ("joint", "joint", 20, 0.2)
    cpu = options("method", "dpspg", "cpu")
    assert (cpu["stage1"], cpu["stage2"], cpu["late"]) == ("separate", "sequential", 0)
    stage1 = options("prompt_learner", "dpspg-coop", "gpu")
    assert {k: stage1[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "warmup_lr",
                                   "momentum")} == {"epochs": 70, "batch_size": 32, "lr": 2e-3,
                                                    "weight_decay": 1e-4, "warmup_epochs": 4,
                                                    "warmup_lr": 1e-5, "momentum": 0.9}
    assert options("generator", "transformer", "gpu")["lr_schedule"] == "epoch"
    assert options("generator", "transformer", "cpu")["lr_schedule"] == "step"
    method = REGISTRY.create("method", "dpspg", **gpu)
    assert method.components() == [("prompt_learner", "dpspg-coop"), ("generator", "transformer")]


def test_a_late_that_leaves_no_epoch_to_select_is_refused_before_stage_one(tmp_path):
    from promptgen.errors import ConfigError

    config = _config("dpspg", dpspg={"stage1": "joint", "stage2": "joint", "late": 2})  # transformer: 2 epochs
    with pytest.raises(ConfigError, match=r"late=2 .*trains 2 epochs .*dpspg\.late below 2"):
        run(config, tmp_path / "late", registry=REGISTRY, progress=False)
    assert not (tmp_path / "late").exists()


@pytest.mark.slow
def test_dpspg_with_the_official_procedure_trains_end_to_end_and_shares_its_joint_labels(tmp_path):
    """The gpu preset's procedure in tiny epochs: both labels of a domain from one dpspg-coop loop, both generators
    in one loop selected from epoch ``late`` on; the run reloads to its scores; dpspg-positive reads the same
    joint labels back from the label store."""
    official = {"stage1": "joint", "stage2": "joint", "late": 1}
    tiny = {"transformer": {"epochs": 3, "lr_schedule": "epoch"}, "dpspg-coop": {"epochs": 2}}
    out = tmp_path / "dpspg"
    metrics = run(_config("dpspg", dpspg=official, **tiny), out, registry=REGISTRY, progress=False)
    fit = metrics["fit"]
    assert fit["stage2"]["mode"] == "joint" and fit["joint"]["best_epoch"] >= 1
    stage1 = fit["stage1"]
    assert set(stage1["positive"]) == set(stage1["negative"]) == {"handwritten", "typeset", "sketch"}
    for domain, positive in stage1["positive"].items():
        negative = stage1["negative"][domain]
        assert positive["learner"] == negative["learner"] == "dpspg-coop"
        assert positive["best_epoch"] == negative["best_epoch"] and positive["stage1_store"]["reused"] is False
        assert "negative_ctx" not in positive and "negative_ctx" not in negative
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2] and {row["path"] for row in history} == {"joint"}
    again = evaluate_run(out, registry=REGISTRY)
    assert again["test_accuracy"] == metrics["test_accuracy"] and again["val_accuracy"] == metrics["val_accuracy"]

    shared = run(_config("dpspg-positive", **{"dpspg-positive": official}, **tiny), tmp_path / "positive",
                 registry=REGISTRY, progress=False)
    assert all(label["stage1_store"]["reused"] for label in shared["fit"]["stage1"]["positive"].values())
    from promptgen.toolkit.checkpoints import load_prompt_label

    for domain in stage1["positive"]:
        assert torch.equal(load_prompt_label(out / "prompt_labels_positive" / domain).ctx,
                           load_prompt_label(tmp_path / "positive" / "prompt_labels_positive" / domain).ctx)
