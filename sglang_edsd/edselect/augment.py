"""Deterministic token-level prompt augmentation: the "views" LiDAR compares.

LiDAR (Thilak et al. 2024) needs several augmented views of each input; Skean et al. 2025
apply it to LLMs with text perturbations of the prompt. We perturb token ids directly, so
the views need no extra NLP library and are exactly reproducible: every non-special
position except the first is independently dropped with probability p/2 or replaced by a
uniformly random non-special vocabulary token with probability p/2. Special tokens (BOS,
chat-template markers) are never touched, so a chat prompt keeps its structure, and at
least one non-first token always survives. The random stream of view k of sample i is
seeded from (seed, i, k), so a view does not depend on the order samples are processed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def view_generator(seed: int, sample_index: int, view_index: int) -> torch.Generator:
    """A torch generator seeded from (seed, sample, view) via numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, sample_index, view_index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def replacement_pool(vocab_size: int, special_ids: Iterable[int]) -> Tensor:
    """The token ids a replacement may draw: the whole vocabulary minus special tokens."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    special = [i for i in special_ids if 0 <= i < vocab_size]
    if special:
        keep[torch.tensor(special)] = False
    pool = keep.nonzero().flatten()
    if pool.numel() == 0:
        raise ValueError("no non-special token ids to draw replacements from")
    return pool


def augment_ids(
    ids: Tensor,
    generator: torch.Generator,
    pool: Tensor,
    special_ids: frozenset[int] = frozenset(),
    prob: float = 0.1,
) -> Tensor:
    """One augmented view of a 1-D id tensor: random token dropout + random replacement."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {prob}")
    ids = ids.to("cpu", torch.long)
    n = ids.numel()
    if n <= 1:
        return ids.clone()
    mutable = torch.tensor([i not in special_ids for i in ids.tolist()], dtype=torch.bool)
    mutable[0] = False
    u = torch.rand(n, generator=generator)
    drop = mutable & (u < prob / 2)
    replace = mutable & (u >= prob / 2) & (u < prob)
    out = ids.clone()
    picks = torch.randint(0, pool.numel(), (n,), generator=generator)
    out[replace] = pool[picks[replace]]
    keep = ~drop
    if int(keep[1:].sum()) == 0:  # never reduce a view to its first token alone
        keep[int(drop.nonzero()[0])] = True
    return out[keep]
