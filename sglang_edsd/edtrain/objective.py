"""EDTrain's loss on one captured sample: soft cross-entropy to the target over the draft
vocabulary at every training-time-test step, on the loss mask narrowed by Mask-p_t.

Index convention (conventions.md): the target distribution p_j at position j predicts
token x[j+1]; it is a label when x[j+1] is loss-bearing (an assistant token). Draft row i
at step k predicts x[i+2+k], so it is trained against p_{i+1+k}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sglang_edsd.edtrain.schedule import mask_high_entropy


@dataclass
class Labels:
    """Per-position supervision of one sample, computed once and shared by all steps."""

    probs: torch.Tensor  # (n, Vd) target distribution over the draft vocab
    train: torch.Tensor  # (n,) bool: label used in the loss (loss mask & Mask-p & top-1 in draft vocab)
    scored: torch.Tensor  # (n,) bool: label counted by the acceptance proxy (loss mask only)
    top1: torch.Tensor  # (n,) target's full-vocab argmax


def make_labels(target_logits: torch.Tensor, loss_mask: torch.Tensor, entropy: torch.Tensor,
                top1: torch.Tensor, in_draft_vocab: torch.Tensor, mask_percent: float) -> Labels:
    """Build labels; positions whose target top-1 lies outside the draft vocabulary are not
    trained on (the draft can never propose that token; SpecForge does the same)."""
    is_label = torch.zeros_like(loss_mask, dtype=torch.bool)
    is_label[:-1] = loss_mask[1:].bool()
    keep = mask_high_entropy(is_label, entropy, mask_percent)
    return Labels(torch.softmax(target_logits.float(), dim=-1), keep & in_draft_vocab[top1], is_label, top1)


def _shifted(x: torch.Tensor, offset: int, n: int, fill: float | bool) -> torch.Tensor:
    """x[offset : offset + n], padded with `fill` past the end."""
    out = x[offset : offset + n]
    if out.shape[0] < n:
        pad = torch.full((n - out.shape[0], *x.shape[1:]), fill, dtype=x.dtype, device=x.device)
        out = torch.cat([out, pad])
    return out


@dataclass
class StepStats:
    loss: torch.Tensor  # scalar, differentiable
    tokens: int  # rows trained on
    correct: int  # proxy: draft top-1 == target top-1
    scored: int


def step_loss(logits: torch.Tensor, labels: Labels, step: int, draft_to_target: torch.Tensor) -> StepStats:
    """Soft CE of step `step` (mean over trained rows) and its top-1 agreement counts."""
    n = logits.shape[0]
    train = _shifted(labels.train, 1 + step, n, False)
    scored = _shifted(labels.scored, 1 + step, n, False)
    if train.any():
        probs = _shifted(labels.probs, 1 + step, n, 0.0)[train]
        loss = -(probs * F.log_softmax(logits[train].float(), dim=-1)).sum(-1).mean()
    else:
        loss = logits.sum() * 0.0  # keeps the graph (and DDP's reducer) intact
    with torch.no_grad():
        guess = draft_to_target[logits[scored].argmax(-1)]
        correct = int((guess == _shifted(labels.top1, 1 + step, n, -1)[scored]).sum())
    return StepStats(loss, int(train.sum()), correct, int(scored.sum()))


def unroll_loss(step_logits: list[torch.Tensor], labels: Labels, draft_to_target: torch.Tensor,
                step_weight: float) -> tuple[torch.Tensor, list[StepStats]]:
    """Total loss sum_k step_weight**k * loss_k (EAGLE-3/SpecForge weighting) and per-step stats."""
    stats = [step_loss(lg, labels, k, draft_to_target) for k, lg in enumerate(step_logits)]
    total = sum(step_weight**k * s.loss for k, s in enumerate(stats))
    return total, stats
