"""EDTrain's loss: soft cross-entropy to the target over the draft vocabulary at every
training-time-test step, on the loss mask narrowed by Mask-p_t, for one sample or a packed
batch of samples.

Index convention: the target distribution p_j at position j predicts
token x[j+1]; it is a label when x[j+1] is loss-bearing (an assistant token). Draft row i
at step k predicts x[i+2+k], so it is trained against p_{i+1+k}, and only while i+1+k is
still inside row i's own sample (packed rows never borrow a neighbour's labels).

A packed batch's loss is the SUM of its samples' losses, each the mean over that sample's
trained rows: exactly what training the samples one by one would add up, so packing
changes throughput, not the objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sglang_edsd.edtrain.schedule import mask_high_entropy


@dataclass
class Labels:
    """Per-position supervision of one sample or a packed batch, shared by all steps."""

    probs: torch.Tensor  # (n, Vd) target distribution over the draft vocab
    train: torch.Tensor  # (n,) bool: label used in the loss (loss mask & Mask-p & top-1 in draft vocab)
    scored: torch.Tensor  # (n,) bool: label counted by the acceptance proxy (loss mask only)
    top1: torch.Tensor  # (n,) target's full-vocab argmax
    sample: torch.Tensor  # (n,) int64: which packed sample each row belongs to (0 for one sample)
    end: torch.Tensor  # (n,) int64: exclusive end row of that sample

    @property
    def num_samples(self) -> int:
        return int(self.sample[-1]) + 1

    @staticmethod
    def cat(parts: list[Labels]) -> Labels:
        """Pack samples' labels back to back (row offsets and sample indices shifted)."""
        if len(parts) == 1:
            return parts[0]
        starts = [0]
        for p in parts[:-1]:
            starts.append(starts[-1] + p.train.shape[0])
        return Labels(
            torch.cat([p.probs for p in parts]),
            torch.cat([p.train for p in parts]),
            torch.cat([p.scored for p in parts]),
            torch.cat([p.top1 for p in parts]),
            torch.cat([p.sample + k for k, p in enumerate(parts)]),
            torch.cat([p.end + s for s, p in zip(starts, parts)]),
        )


def make_labels(
    target_logits: torch.Tensor,
    loss_mask: torch.Tensor,
    entropy: torch.Tensor,
    top1: torch.Tensor,
    in_draft_vocab: torch.Tensor,
    mask_percent: float,
) -> Labels:
    """Build one sample's labels; positions whose target top-1 lies outside the draft vocabulary
    are not trained on (the draft can never propose that token; SpecForge does the same)."""
    n = loss_mask.shape[0]
    is_label = torch.zeros_like(loss_mask, dtype=torch.bool)
    is_label[:-1] = loss_mask[1:].bool()
    keep = mask_high_entropy(is_label, entropy, mask_percent)
    device = loss_mask.device
    return Labels(
        torch.softmax(target_logits.float(), dim=-1),
        keep & in_draft_vocab[top1],
        is_label,
        top1,
        torch.zeros(n, dtype=torch.long, device=device),
        torch.full((n,), n, dtype=torch.long, device=device),
    )


@dataclass
class StepStats:
    loss: torch.Tensor  # scalar, differentiable: sum over samples of each sample's mean CE
    loss_sum: float  # sum of CE over every trained row (per-token statistics)
    tokens: int  # rows trained on
    correct: int  # proxy: draft top-1 == target top-1
    scored: int


def step_loss(logits: torch.Tensor, labels: Labels, step: int, draft_to_target: torch.Tensor) -> StepStats:
    """Soft CE of step `step` (per sample: mean over its trained rows; summed over samples)
    and its top-1 agreement counts."""
    n = logits.shape[0]
    src = torch.arange(1 + step, 1 + step + n, device=logits.device)
    inside = src < labels.end
    src = src.clamp(max=n - 1)
    train = labels.train[src] & inside
    scored = labels.scored[src] & inside
    if train.any():
        ce = -(labels.probs[src[train]] * F.log_softmax(logits[train].float(), dim=-1)).sum(-1)
        who = labels.sample[train]
        per_sample = torch.zeros(labels.num_samples, device=ce.device).index_add(0, who, ce)
        count = torch.bincount(who, minlength=labels.num_samples)
        loss = (per_sample[count > 0] / count[count > 0]).sum()
        loss_sum = float(ce.detach().sum())
    else:
        loss, loss_sum = logits.sum() * 0.0, 0.0  # keeps the graph (and DDP's reducer) intact
    with torch.no_grad():
        guess = draft_to_target[logits[scored].argmax(-1)]
        correct = int((guess == labels.top1[src[scored]]).sum())
    return StepStats(loss, loss_sum, int(train.sum()), correct, int(scored.sum()))


def unroll_loss(
    step_logits: list[torch.Tensor], labels: Labels, draft_to_target: torch.Tensor, step_weight: float
) -> tuple[torch.Tensor, list[StepStats]]:
    """Total loss sum_k step_weight**k * loss_k (EAGLE-3/SpecForge weighting) and per-step stats."""
    stats = [step_loss(lg, labels, k, draft_to_target) for k, lg in enumerate(step_logits)]
    total = sum(step_weight**k * s.loss for k, s in enumerate(stats))
    return total, stats
