"""EOT-truncated vs full-length text encoding: speed-up and exactness, measured side by side in one run."""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.class_lists import DOMAINNET, PACS, prompt_name
from promptgen.prompts import PromptAssembler


def class_names(count: int) -> list[str]:
    """PACS's 7 classes, DomainNet's 345, or the first ``count`` DomainNet classes."""
    if count == len(PACS):
        return list(PACS)
    if count > len(DOMAINNET):
        raise ValueError(f"at most {len(DOMAINNET)} classes, got {count}")
    return [prompt_name(name) for name in DOMAINNET[:count]]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure(backbone, num_classes: int, *, n_ctx: int = 4, images: int = 1, repeats: int = 3, seed: int = 0) -> dict:
    """Encode the class prompts of ``images`` per-image contexts both ways; time and compare them."""
    generator = torch.Generator().manual_seed(seed)
    assembler = PromptAssembler(backbone, class_names(num_classes), n_ctx)
    ctx = 0.02 * torch.randn(images, n_ctx, backbone.ctx_dim, generator=generator)  # CoOp's init scale
    embeddings, eot = assembler.assemble(ctx.to(backbone.device))
    embeddings, eot = embeddings.reshape(-1, *embeddings.shape[-2:]), eot.reshape(-1)
    truncated = backbone.encode_prompts(embeddings, eot)
    full = backbone.encode_prompts(embeddings, eot, full_length=True)
    t_truncated = _median_seconds(lambda: backbone.encode_prompts(embeddings, eot), repeats)
    t_full = _median_seconds(lambda: backbone.encode_prompts(embeddings, eot, full_length=True), repeats)
    return {
        "classes": num_classes,
        "prompts": len(eot),
        "tokens_truncated": assembler.length,
        "tokens_full": backbone.context_length,
        "seconds_truncated": t_truncated,
        "seconds_full": t_full,
        "speedup": t_full / t_truncated,
        "max_abs_diff": (truncated - full).abs().max().item(),
    }


def table(rows: list[dict], model: str) -> str:
    lines = [
        f"EOT-truncated vs full-length text encoding ({model})",
        "",
        "| classes | prompts | tokens (trunc / full) | trunc s | full s | speed-up | max abs diff |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['classes']} | {r['prompts']} | {r['tokens_truncated']} / {r['tokens_full']} | "
            f"{r['seconds_truncated']:.4f} | {r['seconds_full']:.4f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.2e} |"
        )
    return "\n".join(lines)
