"""Stage II steps with image features read from the cache vs recomputed by the image encoder every step
(the official SPG code's structure: real and "fake" batches both go through the frozen encoder).

python -m benchmarks.stage2_cache [--steps 40] [--batch-size 32]; both arms run here, side by side.
"""

from __future__ import annotations

import argparse
import time

import torch

from promptgen.cache import FeatureCache
from promptgen.data import SampleImages
from promptgen.registry import create
from promptgen.values import PromptLabel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--target", default="photo")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    backbone = create("backbone", "tiny-clip-digits", device="cpu")
    dataset = create("dataset", "digits-dg")
    samples = [s for d in dataset.domains if d != args.target for s in dataset.samples(d, "train")]
    with FeatureCache(args.cache_dir) as cache:
        cached = cache.get(backbone, dataset, "digits-dg", samples, train=True, views=1, progress=False)
    labels = [PromptLabel(ctx=0.02 * torch.randn(4, backbone.ctx_dim), fingerprint=backbone.fingerprint, domain=str(d),
                          class_names=dataset.classes) for d in range(len(dataset.domains))]
    targets = torch.stack([label.ctx for label in labels])
    images = SampleImages(dataset, samples, backbone.image_transform(True))
    rng = torch.Generator().manual_seed(0)

    def run(recompute: bool) -> float:
        generator = create("generator", "cgan", feature_dim=backbone.embed_dim, n_ctx=4, ctx_dim=backbone.ctx_dim,
                           progress=False)
        optimizers = [torch.optim.AdamW(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
                      for net in (generator.generator, generator.discriminator)]
        start = time.perf_counter()
        for _ in range(args.steps):
            index = torch.randint(len(samples), (2 * args.batch_size,), generator=rng)  # real + fake batch
            if recompute:
                pixels = torch.stack([images[int(i)][0] for i in index])
                features = backbone.encode_images(pixels)
            else:
                features = cached.features[index]
            domain_ids = cached.domain_ids[index]
            generator._step(features, domain_ids, targets, torch.arange(args.batch_size), optimizers, rng)
        return (time.perf_counter() - start) / args.steps

    cache_step, recompute_step = run(False), run(True)
    steps_per_epoch = -(-len(samples) // args.batch_size)
    print(f"stage II step, batch {args.batch_size}, {len(samples)} training images ({steps_per_epoch} steps/epoch):")
    print(f"  features from the cache:    {1000 * cache_step:8.2f} ms/step  ({cache_step * steps_per_epoch:7.1f} s/epoch)")
    print(f"  features recomputed:        {1000 * recompute_step:8.2f} ms/step  ({recompute_step * steps_per_epoch:7.1f} s/epoch)")
    print(f"  speed-up from the cache:    {recompute_step / cache_step:8.1f}x")


if __name__ == "__main__":
    main()
