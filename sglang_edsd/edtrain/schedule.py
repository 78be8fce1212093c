"""EDTrain's two curricula (paper Sec. 3.2): Mask-p_t (Eq. 5) and Step-n_t (Eq. 6).

Both are pure functions of the epoch t in 0..T-1 so that a resumed run, a DDP rank and a
unit test all agree on them without shared state; the learning-rate schedule, likewise, is a
pure function of the tokens seen.
"""

from __future__ import annotations

import math

import torch


def mask_percent(epoch: int, epochs: int, gamma: float) -> float:
    """Eq. 5: p_t = max(0, T - t - 1) * gamma, in percent (T=8, gamma=3: 21, 18, ..., 3, 0)."""
    _check_epoch(epoch, epochs)
    return max(0, epochs - epoch - 1) * gamma


def num_steps(epoch: int, epochs: int, s_max: int) -> int:
    """Eq. 6: n_t = floor(1 + (S_max - 1) * t / (T - 1)); grows from 1 to S_max.

    Integer arithmetic keeps the floor exact; a one-epoch run (T=1) trains at S_max.
    """
    _check_epoch(epoch, epochs)
    if s_max < 1:
        raise ValueError(f"S_max must be >= 1, got {s_max}")
    if epochs == 1:
        return s_max
    return 1 + (s_max - 1) * epoch // (epochs - 1)


def _check_epoch(epoch: int, epochs: int) -> None:
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in 0..T-1 with T >= 1, got t={epoch}, T={epochs}")


def mask_high_entropy(loss_mask: torch.Tensor, entropy: torch.Tensor, percent: float) -> torch.Tensor:
    """Mask-p for one sample: drop the top `percent`% loss-bearing tokens by target entropy.

    Only loss-bearing tokens are ranked (an already-masked token is never counted or
    picked); floor(percent/100 * #loss-bearing) are removed, ties broken by position so
    the result is deterministic.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"Mask-p percent must be in [0, 100], got {percent}")
    keep = loss_mask.clone().bool()
    candidates = keep.nonzero().flatten()
    drop = int(candidates.numel() * percent / 100)
    if drop == 0:
        return keep
    order = torch.sort(entropy[candidates], descending=True, stable=True).indices
    keep[candidates[order[:drop]]] = False
    return keep


def lr_factor(seen: int, start: int, total: int, warmup: int, schedule: str) -> float:
    """The lr multiplier at `seen` tokens of a run over tokens start..total: linear warmup over
    `warmup` tokens, then constant or cosine down to 0.1. A pure function of the token count, so
    a resumed run follows the same curve (why not a torch LR scheduler with its own state)."""
    done = max(0, seen - start)
    if warmup and done < warmup:
        return (done + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - start - warmup)
    progress = min(1.0, (done - warmup) / span)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))
