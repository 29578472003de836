"""From a dataset plugin's samples to batches of pixels, and to image features."""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from promptgen.components.protocols import Backbone, Dataset
from promptgen.values import FeatureSet, Sample


def stable_int_hash(*parts) -> int:
    """A non-negative 63-bit int from ``parts``' strings, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SampleImages(torch.utils.data.Dataset):
    """A torch Dataset over samples: loads each image lazily and applies ``transform``.

    views: one view index per sample. When given, torch's RNG is seeded from (sample key, view)
    for the transform, so a random augmentation gives the same pixels in every run and in any
    DataLoader worker; the caller's RNG state is left as it was.
    """

    def __init__(
        self, dataset: Dataset, samples: Sequence[Sample], transform: Callable, views: Sequence[int] | None = None
    ):
        if views is not None and len(views) != len(samples):
            raise ValueError(f"SampleImages: {len(views)} views for {len(samples)} samples")
        self.dataset = dataset
        self.samples = samples
        self.transform = transform
        self.views = views
        self.domain_ids = {domain: i for i, domain in enumerate(dataset.domains)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = self.dataset.load_image(sample)
        if self.views is None:
            pixels = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stable_int_hash(sample.key, self.views[index]))
                pixels = self.transform(image)
        return pixels, sample.label, self.domain_ids[sample.domain]


def loader_context() -> str | None:
    """Loader workers start by fork where torch's own default is fork (Linux), even in a process that was
    itself spawned (a launcher's or the perf suite's worker): such a process inherits "spawn", and a
    spawned loader worker imports torch and unpickles the dataset again for every extraction (measured:
    37 images/s instead of 1,513 with 2 workers on 512 images)."""
    import multiprocessing
    import sys

    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else None


def encode_batches(backbone: Backbone, images: SampleImages, *, batch_size: int, num_workers: int, progress: bool,
                   desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(features [B, E] on the backbone's device, labels [B], domain ids [B]) per batch of ``images``.

    The loader has a private generator: it draws its workers' base seed from it, not from the
    caller's RNG, so what a run draws later does not depend on how many batches were encoded.
    """
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch_size, num_workers=num_workers, pin_memory=backbone.device.type == "cuda",
        generator=torch.Generator(), multiprocessing_context=loader_context() if num_workers else None,
    )
    for pixels, labels, domain_ids in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        yield backbone.encode_images(pixels), labels, domain_ids


def extract_features(
    backbone: Backbone,
    dataset: Dataset,
    samples: Sequence[Sample],
    *,
    train: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> FeatureSet:
    """Encode every sample's image (train or eval transform) into a FeatureSet on the CPU."""
    images = SampleImages(dataset, samples, backbone.image_transform(train))
    features, labels, domain_ids = [], [], []
    batches = encode_batches(backbone, images, batch_size=batch_size, num_workers=num_workers, progress=progress,
                             desc=desc)
    for encoded, label, domain in batches:
        features.append(encoded.cpu())
        labels.append(label)
        domain_ids.append(domain)
    if not features:
        width = backbone.embed_dim
        return FeatureSet(torch.empty(0, width), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    return FeatureSet(torch.cat(features), torch.cat(labels).long(), torch.cat(domain_ids).long())
