"""The data order of a run: a seeded permutation per data epoch, cut into packed micro-batches.

Why packed: one conversation per optimizer step spends the step on Python overhead and an
AdamW update per few hundred tokens; packing consecutive samples of the permutation up to a
token budget keeps every sample's attention to itself (see `model.TTTCache`) and its loss its
own (see `objective`), so only the throughput changes. The order is a pure function of
(lengths, world size, seed, epoch, budget): a checkpoint stores only a position in it.
"""

from __future__ import annotations

import torch


def pack(order: list[int], lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Consecutive samples of `order`, grouped while their lengths add up to <= batch_tokens
    (a longer sample goes alone; batch_tokens=0: one sample per batch)."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        if current and used + lengths[i] > batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        batches.append(current)
    return batches


def epoch_batches(lengths: list[int], world: int, seed: int, epoch: int, batch_tokens: int) -> list[list[int]]:
    """All ranks' micro-batches of one data epoch; rank r takes batches r, r + world, ...

    Padded by wrapping around so every rank runs the same number of micro-batches (DDP needs
    it): at most world-1 batches are seen twice in an epoch, no sample is skipped.
    """
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    batches = pack(perm, lengths, batch_tokens)
    return batches + batches[: (-len(batches)) % world]
