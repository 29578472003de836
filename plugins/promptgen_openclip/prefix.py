"""Text encoding with a shared prompt prefix: ``[SOS] ctx_1..ctx_n`` once per context, every class suffix after it.

Every class prompt of one context starts with the same tokens, and CLIP's text transformer is causal:
a position attends to itself and the positions before it only. So the prefix's hidden states, and
its keys and values in every layer, are the same for every class. They are computed once per
context, and each class runs only its own suffix (class tokens, '.', EOT) through the layers,
attending to the cached prefix keys and values and causally to itself. Classes are grouped by
suffix length (``length_groups``), so a short class name is not padded to the longest one. The result equals the plain
encoding up to float rounding (tests/test_prefix_sharing.py); it is used only where it is exact
(a causal mask and EOT pooling: ``OpenClipBackbone.truncates_at_eot``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., L, W] -> [..., heads, L, W / heads]."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _qkv(block, x: torch.Tensor):
    attn = block.attn
    return F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def _attend(block, q, k, v, mask, heads: int) -> torch.Tensor:
    out = F.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads), attn_mask=mask)
    return block.attn.out_proj(out.transpose(-3, -2).flatten(-2))


def _mlp(block, x: torch.Tensor) -> torch.Tensor:
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def prefix_pass(text, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The keys and values [B, P, W] of the prefix [B, P, W] (positions 0..P-1) in every layer."""
    blocks, heads = text.transformer.resblocks, text.transformer.resblocks[0].attn.num_heads
    causal = torch.ones(prefix.shape[1], prefix.shape[1], dtype=torch.bool, device=prefix.device).tril()
    x, cache = prefix + text.positional_embedding[: prefix.shape[1]].to(prefix.dtype), []
    for block in blocks:
        q, k, v = _qkv(block, block.ln_1(x))
        cache.append((k, v))
        x = _mlp(block, x + block.ls_1(_attend(block, q, k, v, causal, heads)))
    return cache


def suffix_pass(text, cache, suffixes: torch.Tensor, start: int) -> torch.Tensor:
    """Hidden states [B, C, S, W] of class suffixes [C, S, W] at positions start.. after each cached prefix."""
    blocks, heads = text.transformer.resblocks, text.transformer.resblocks[0].attn.num_heads
    batch, (classes, length) = cache[0][0].shape[0], suffixes.shape[:2]
    position = text.positional_embedding[start : start + length].to(suffixes.dtype)
    x = (suffixes + position).expand(batch, -1, -1, -1)
    # A suffix position sees the whole prefix and the suffix positions up to itself.
    mask = torch.ones(length, start + length, dtype=torch.bool, device=suffixes.device).tril(diagonal=start)
    for block, (k_prefix, v_prefix) in zip(blocks, cache):
        q, k, v = _qkv(block, block.ln_1(x))
        k = torch.cat([k_prefix[:, None].expand(-1, classes, -1, -1), k], dim=2)
        v = torch.cat([v_prefix[:, None].expand(-1, classes, -1, -1), v], dim=2)
        x = _mlp(block, x + block.ls_1(_attend(block, q, k, v, mask, heads)))
    return x


def length_groups(lengths: list[int], slack: float = 0.25, min_group: int = 16) -> list[list[int]]:
    """Classes grouped by suffix length, shortest first: a group grows while it has fewer than ``min_group``
    classes or padding its members to its longest costs under ``slack`` more tokens than they need (one
    pass per group: few large passes beat many exact ones, and padding after an EOT changes nothing)."""
    groups, needed = [], 0
    for c in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and len(groups[-1]) >= min_group and \
                (len(groups[-1]) + 1) * lengths[c] > (1 + slack) * (needed + lengths[c]):
            groups.append([])
            needed = 0
        if not groups:
            groups.append([])
        groups[-1].append(c)
        needed += lengths[c]
    return groups


def encode_with_prefix(text, prefix: torch.Tensor, suffixes: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
    """Unnormalised text features [B, C, E] of the prompts prefix[b] ⊕ suffixes[c] cut at eot_index[c] (an index
    into the whole prompt); one prefix pass, then one suffix pass per group of classes of similar length."""
    start = prefix.shape[1]
    cache = prefix_pass(text, prefix)
    lengths = (eot_index - start + 1).tolist()  # each class's suffix up to and including its EOT
    pieces, order = [], []
    for group in length_groups(lengths):
        ends = torch.tensor([lengths[c] - 1 for c in group], device=suffixes.device)
        hidden = suffix_pass(text, cache, suffixes[group, : int(ends.max()) + 1], start)  # [B, Cg, S, W]
        pieces.append(text.ln_final(hidden[:, torch.arange(len(group), device=ends.device), ends]))  # at each EOT
        order += group
    pooled = torch.cat(pieces, dim=1)[:, torch.tensor(order).argsort()]  # back to the classes' order
    projection = text.text_projection
    if projection is not None:
        pooled = projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection
    return pooled


def supported(text) -> bool:
    """Blocks this module knows how to run: open_clip's ResidualAttentionBlock with nn.MultiheadAttention."""
    from open_clip.transformer import ResidualAttentionBlock

    return all(type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
               and isinstance(block.attn, torch.nn.MultiheadAttention) and block.attn.in_proj_weight is not None
               for block in text.transformer.resblocks)
