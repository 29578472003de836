"""From a dataset plugin's samples to batches of pixels, and to image features."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from promptgen.protocols import Backbone, Dataset
from promptgen.values import FeatureSet, Sample


class SampleImages(torch.utils.data.Dataset):
    """A torch Dataset over samples: loads each image lazily and applies ``transform``."""

    def __init__(self, dataset: Dataset, samples: Sequence[Sample], transform: Callable):
        self.dataset = dataset
        self.samples = samples
        self.transform = transform
        self.domain_ids = {domain: i for i, domain in enumerate(dataset.domains)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        pixels = self.transform(self.dataset.load_image(sample))
        return pixels, sample.label, self.domain_ids[sample.domain]


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
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch_size, num_workers=num_workers, pin_memory=backbone.device.type == "cuda"
    )
    features, labels, domain_ids = [], [], []
    for pixels, label, domain in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        features.append(backbone.encode_images(pixels).cpu())
        labels.append(label)
        domain_ids.append(domain)
    if not features:
        width = backbone.embed_dim
        return FeatureSet(torch.empty(0, width), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    return FeatureSet(torch.cat(features), torch.cat(labels).long(), torch.cat(domain_ids).long())
