"""Entropy stop: each request stops drafting after the step whose draft entropy crosses a threshold.

Why: EDSD's premise is that entropy says where a draft can be trusted, and later chain steps
are rarely accepted; a request whose draft is unsure should not spend draft steps (and verify
judgements) on tokens that will be thrown away. Opt-in ($SGLANG_EDSD_ENTROPY_STOP: a threshold
in nats over the draft vocabulary, or `draft` for the calibrated one in the draft folder's
`entropy_stop.json`, written by `sglang-edsd calibrate-stop`).

Per request, d_1..d_S are kept up to and including the first step whose distribution has
entropy > threshold (so d_1 always is). Where the draft runs eagerly (CPU, or GPU without draft
CUDA graphs) a draft step is skipped once every request of the batch has stopped, and the round's
chain is cut to the deepest kept proposal: verify and draft extend run kept + 1 rows per request
instead of S + 1, the part of a round that grows with depth on CPU. Lossless: a shorter chain is
verified as any chain is, and a request that stopped before the round's depth has each dropped
proposal replaced, for the acceptance test only, by an id no target prediction can equal, so
acceptance ends at its stop and the token emitted there is the target's own (greedy batches; a
batch with sampled requests verifies those unmasked). The worker side lives with EASD's draft
statistics (`easd/worker.py`), which record the same per-step entropies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_edsd import envs
from sglang_edsd.errors import EDSDError

SIDECAR = "entropy_stop.json"
NEVER_ACCEPTED = -1  # no target prediction is a negative id


class EntropyStopError(EDSDError):
    """An entropy-stop setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class EntropyStop:
    """The stop threshold, in nats over the draft vocabulary."""

    threshold: float

    def __post_init__(self) -> None:
        if math.isnan(self.threshold) or self.threshold < 0:
            raise EntropyStopError(f"entropy stop threshold must be >= 0 nats, got {self.threshold}")

    @classmethod
    def from_sidecar(cls, draft_folder: Path) -> EntropyStop:
        path = draft_folder / SIDECAR
        if not path.is_file():
            raise EntropyStopError(
                f"${envs.ENTROPY_STOP.name}=draft but {path} does not exist: run `sglang-edsd calibrate-stop` "
                "for this draft, or give a threshold in nats"
            )
        try:
            return cls(float(json.loads(path.read_text())["threshold"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise EntropyStopError(f"{path}: expected a JSON object with a numeric 'threshold' ({e})") from None

    @classmethod
    def from_env(cls, draft_folder: Path | None) -> EntropyStop | None:
        """$SGLANG_EDSD_ENTROPY_STOP: unset -> None, `draft` -> the draft folder's sidecar, else nats."""
        value = envs.ENTROPY_STOP.get()
        if not value:
            return None
        if value == "draft":
            if draft_folder is None:
                raise EntropyStopError(f"${envs.ENTROPY_STOP.name}=draft needs a local draft folder")
            return cls.from_sidecar(draft_folder)
        try:
            threshold = float(value)
        except ValueError:
            raise EntropyStopError(
                f"${envs.ENTROPY_STOP.name}={value!r}: give a threshold in nats or 'draft'"
            ) from None
        return cls(threshold)


def kept_steps(draft_entropy: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B] proposals kept per request from draft entropies [B, S]: up to and including the first
    step above `threshold`, all S if none is."""
    steps = draft_entropy.shape[1]
    above = draft_entropy > threshold
    first = torch.where(above.any(1), above.int().argmax(1) + 1, steps)
    return first.to(torch.int32)


def all_stopped(draft_entropy_so_far: torch.Tensor, threshold: float) -> bool:
    """Whether every request has already crossed the threshold (host sync: eager drafting only)."""
    return bool((draft_entropy_so_far > threshold).any(1).all())


def mask_dropped(draft_tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of chain verify tokens [B * (S + 1)] (node 0 the last verified token, then d_1..d_S)
    with every proposal after each request's `keep` replaced by NEVER_ACCEPTED."""
    bsz = keep.shape[0]
    nodes = draft_tokens.view(bsz, -1)
    step = torch.arange(nodes.shape[1], device=nodes.device)
    dropped = step[None, :] > keep.to(nodes.device)[:, None]
    return torch.where(dropped, torch.full_like(nodes, NEVER_ACCEPTED), nodes).view_as(draft_tokens)
