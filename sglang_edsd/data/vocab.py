"""Draft vocabulary: the K target tokens the draft predicts most often in the training data.

An EAGLE-3-style draft's lm_head covers only K target ids; SGLang maps draft id i back to
target id ``d2t[i] + i``. Picking the K most frequent ids on loss-bearing positions (the
tokens the draft is trained to predict) maximises the share of targets the draft can hit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sglang_edsd.data.chat import DataError
from sglang_edsd.draft_io import vocab_maps


def count_loss_tokens(samples: Iterable[dict[str, Any]], vocab_size: int) -> torch.Tensor:
    """int64 counts over the target vocabulary of the ids at positions where loss_mask == 1."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for sample in samples:
        ids = torch.as_tensor(sample["input_ids"], dtype=torch.int64)
        picked = ids[torch.as_tensor(sample["loss_mask"], dtype=torch.bool)]
        bad = picked[(picked < 0) | (picked >= vocab_size)]
        if bad.numel():
            raise DataError(
                f"sample {sample.get('id')!r}: token id {int(bad[0])} outside the target "
                f"vocabulary 0..{vocab_size - 1} (tokenized for another model?)"
            )
        counts.index_add_(0, picked, torch.ones_like(picked))
    return counts


def select_draft_vocab(counts: torch.Tensor, k: int) -> torch.Tensor:
    """The k most frequent target ids (ties: lower id first), sorted ascending, int64.

    If fewer than k ids were ever seen, the lowest unseen ids fill the rest: SGLang sizes the
    draft's lm_head and d2t from draft_vocab_size, so the map needs exactly k distinct rows.
    """
    if counts.dim() != 1:
        raise DataError(f"counts must be a 1-D tensor over the target vocabulary, got shape {tuple(counts.shape)}")
    if not 1 <= k <= counts.numel():
        raise DataError(f"draft vocabulary size must be in 1..{counts.numel()} (the target vocabulary), got {k}")
    order = torch.sort(-counts.long(), stable=True).indices  # stable: equal counts keep ascending ids
    return torch.sort(order[:k]).values


def draft_vocab_maps(draft_to_target: torch.Tensor, vocab_size: int) -> dict[str, torch.Tensor]:
    """``d2t`` (target id - draft id, int64) and ``t2d`` (bool over the target vocabulary)."""
    return vocab_maps(draft_to_target, vocab_size)


def vocab_coverage(counts: torch.Tensor, draft_to_target: torch.Tensor) -> float:
    """Fraction of the counted loss-bearing tokens whose id is in the draft vocabulary."""
    total = int(counts.sum())
    if total == 0:
        raise DataError("no loss-bearing tokens were counted")
    return int(counts[draft_to_target.long()].sum()) / total
