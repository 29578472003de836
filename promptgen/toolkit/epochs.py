"""What one training epoch visits: every image once, through one of its cached views, in shuffled batches.

The official code (Dassl's data loader) shows each training image once per epoch, freshly augmented,
and drops the last incomplete batch (``drop_last``, when there is at least one full batch:
Dassl ``dassl/data/data_manager.py:38-44``), so an epoch is floor(N / batch) steps. promptgen caches
V augmented views per image instead of augmenting every step; an epoch draws one of them per image,
a different one each epoch (each view once per image over V epochs, in a seeded order). Every loop
that trains on cached features (prompt learners, generators, baselines) takes its batches here.

A FeatureSet whose ``image_ids`` is None counts every row as an image: the run's ``epoch = "views"``
(promptgen.runs.context) hands the train split over that way, so an epoch then iterates every cached view.
"""

from __future__ import annotations

import torch

from promptgen.values import FeatureSet


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Dassl's count: full batches only, or one batch of everything when there is no full one."""
    return images // batch_size if images >= batch_size else int(images > 0)


class Epochs:
    """The batches (row indices into ``train``) of each successive epoch; seeded by ``generator``."""

    def __init__(self, train: FeatureSet, batch_size: int, generator: torch.Generator):
        ids = train.image_ids if train.image_ids is not None else torch.arange(len(train))
        order = torch.argsort(ids, stable=True)
        _, counts = torch.unique_consecutive(ids[order], return_counts=True)
        if len(counts) and not bool((counts == counts[0]).all()):
            raise ValueError(f"Epochs: every image must have the same number of views, got "
                             f"{sorted(set(counts.tolist()))}")
        self.views = int(counts[0]) if len(counts) else 1
        self.rows = order.view(-1, self.views)  # [images, views]: the rows holding each image's views
        self.batch_size = batch_size
        self.steps = steps_per_epoch(len(self.rows), batch_size)
        self._generator = generator
        self._epoch = 0
        self._view_order: torch.Tensor | None = None

    @property
    def images(self) -> int:
        return len(self.rows)

    def next(self) -> list[torch.Tensor]:
        """The next epoch's ``steps`` batches: one view of every image, shuffled (the last partial batch dropped)."""
        turn = self._epoch % self.views
        if self.views > 1 and turn == 0:  # a fresh order of the views for each image, every V epochs
            self._view_order = torch.argsort(torch.rand(self.images, self.views, generator=self._generator), dim=1)
        rows = self.rows[:, 0] if self.views == 1 else \
            self.rows.gather(1, self._view_order[:, turn:turn + 1]).squeeze(1)
        self._epoch += 1
        rows = rows[torch.randperm(self.images, generator=self._generator)]
        size = self.batch_size if self.images >= self.batch_size else self.images
        return [rows[start * size:(start + 1) * size] for start in range(self.steps)]
