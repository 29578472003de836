"""Linear probe (SPG's ``clip_lr``): logistic regression on the frozen image features of the source domains.

No prompt at all: an upper reference for what the features carry about the classes on the sources,
and what a classifier fit on them transfers to the target. The official code fits scikit-learn's
L-BFGS logistic regression with C = 0.316 on raw (unnormalised, fp16) features of the train split;
our cache holds L2-normalised features, on which a C chosen for raw ViT-B/16 features (norm ~10)
regularises ~100x harder. So C is chosen on the source val split from a log grid (the CLIP paper's
protocol) unless given; pass ``C=0.316`` to fix it as the official code does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import attrs
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from promptgen.toolkit import option, write_json

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


class LinearProbe:
    """Logistic regression (L-BFGS, L2) on the source domains' cached image features; C from the val split."""

    inputs = "features"
    rank = 10  # the SPG paper's table: zero-shot, linear probe, CoOp, CoCoOp, DPL, VP, VPT, MaPLe, SPG
    file = "linear_probe"
    presets = {"gpu": {"max_iter": 1000}, "cpu": {"max_iter": 300}}

    @attrs.frozen(kw_only=True)
    class Options:
        C: Annotated[float | None, option("inverse L2 regularisation strength; None: chosen on the source val split "
                                          "from a log grid (the official code: 0.316)", above=0)] = None
        max_iter: Annotated[int, option("L-BFGS iterations at most", minimum=1)] = 1000

    def __init__(self, options: Options = Options()):
        self.options = options
        self.weight = self.bias = None

    def components(self):
        return ()

    def _fit(self, C: float, x: np.ndarray, y: np.ndarray, seed: int):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():  # a probe stopped at max_iter is still a probe; the report says C and iter
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=C, max_iter=self.options.max_iter, random_state=seed).fit(x, y)

    def fit(self, run) -> dict:
        with run.timed("train"):
            train, val = run.features("train"), run.features("val")
            x, y = train.features.float().numpy(), train.labels.numpy()
            grid = (self.options.C,) if self.options.C is not None else C_GRID
            scores, best = {}, None
            for C in grid:
                model = self._fit(C, x, y, run.seed)
                score = float((model.predict(val.features.float().numpy()) == val.labels.numpy()).mean()) \
                    if len(val) and len(grid) > 1 else float("nan")
                scores[C] = score
                if best is None or score > best[0]:  # ties keep the smaller C (the simpler probe)
                    best = (score, C, model)
            _, C, model = best
            # A class missing from the sources has no row: it gets -inf, never predicted.
            weight = torch.full((len(run.classes), x.shape[1]), 0.0)
            bias = torch.full((len(run.classes),), float("-inf"))
            coef = model.coef_ if len(model.classes_) > 2 else np.stack([-model.coef_[0], model.coef_[0]])
            intercept = model.intercept_ if len(model.classes_) > 2 else np.array([-model.intercept_[0],
                                                                                      model.intercept_[0]])
            weight[model.classes_] = torch.tensor(coef, dtype=torch.float32)
            bias[model.classes_] = torch.tensor(intercept, dtype=torch.float32)
            self.weight, self.bias = weight, bias
        return {"C": C, "val_accuracy_per_C": {str(k): v for k, v in scores.items()},
                "iterations": int(np.max(model.n_iter_))}

    def logits(self, run, split: str) -> torch.Tensor:
        return run.features(split).features.float().cpu() @ self.weight.T + self.bias

    def save(self, directory: Path) -> None:
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()},
                  Path(directory) / f"{self.file}.safetensors")
        write_json(Path(directory) / f"{self.file}.json", {"method": "linear-probe", "C": self.options.C,
                                                           "max_iter": self.options.max_iter})

    def load(self, directory: Path, run) -> None:
        state = load_file(Path(directory) / f"{self.file}.safetensors")
        self.weight, self.bias = state["weight"], state["bias"]
