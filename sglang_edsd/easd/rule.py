"""EASD's verification rule: reject a draft token where draft and target are both unsure and agree.

At draft position k a chain proposes d_k; the target's verify row k-1 scores it. When the
draft's entropy there exceeds `draft_entropy`, the target's exceeds `target_entropy`, and the
two top-`top_n` candidate sets share at least `min_overlap` of their ids, d_k is rejected
even if the target would accept it: its target logit is set to -inf, so a greedy verify picks
the target's best other token and a sampling verify draws from the target without d_k. This
trades exactness for not propagating a confident-looking joint mistake, so it is lossy and
off unless configured.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sglang_edsd import envs
from sglang_edsd.errors import EDSDError

ENV = envs.EASD.name  # a JSON object, or the path of a JSON file, of EASDConfig fields


class EASDConfigError(EDSDError):
    """An EASD configuration that cannot be used."""


@dataclass(frozen=True)
class EASDConfig:
    """Thresholds of the rule; entropies in nats over each model's own vocabulary."""

    draft_entropy: float
    target_entropy: float
    top_n: int = 5
    min_overlap: float = 0.6  # fraction of top_n ids both sets share

    def __post_init__(self) -> None:
        if not 1 <= self.top_n <= 100:
            raise EASDConfigError(f"EASD top_n must be in 1..100, got {self.top_n}")
        if not 0.0 <= self.min_overlap <= 1.0:
            raise EASDConfigError(f"EASD min_overlap must be a fraction in [0, 1], got {self.min_overlap}")
        for name in ("draft_entropy", "target_entropy"):
            if math.isnan(getattr(self, name)):
                raise EASDConfigError(f"EASD {name} is NaN")

    @classmethod
    def from_json(cls, text: str, where: str) -> EASDConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise EASDConfigError(f"{where}: not JSON ({e})") from None
        if not isinstance(raw, dict):
            raise EASDConfigError(f"{where}: expected a JSON object of EASD thresholds")
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise EASDConfigError(f"{where}: unknown EASD fields {sorted(unknown)}")
        try:
            return cls(**{k: (int(v) if k == "top_n" else float(v)) for k, v in raw.items()})
        except TypeError as e:
            raise EASDConfigError(f"{where}: {e}") from None

    @classmethod
    def from_env(cls) -> EASDConfig | None:
        """The configuration named by $SGLANG_EDSD_EASD (inline JSON or a file); None when unset."""
        value = envs.EASD.get()
        if not value:
            return None
        if value.startswith("{"):
            return cls.from_json(value, f"${ENV}")
        path = Path(value)
        if not path.is_file():
            raise EASDConfigError(f"${ENV}={value}: no such file (give a JSON file or inline JSON)")
        return cls.from_json(path.read_text(), str(path))

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def entropy_and_top(logits: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and top-`top_n` ids of each row's softmax, computed in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
    return entropy, logits.topk(min(top_n, logits.shape[-1]), dim=-1).indices


def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fraction of the ids in each row of `a` [..., n] that also appear in the same row of `b`."""
    return (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).float().mean(-1)


def fire(
    cfg: EASDConfig,
    draft_entropy: torch.Tensor,
    draft_top: torch.Tensor,
    target_entropy: torch.Tensor,
    target_top: torch.Tensor,
) -> torch.Tensor:
    """Where the rule rejects: draft/target entropies [B, S], top ids [B, S, n] in target ids."""
    return (
        (draft_entropy > cfg.draft_entropy)
        & (target_entropy > cfg.target_entropy)
        & (overlap(draft_top, target_top) >= cfg.min_overlap)
    )


def mask_rejected(
    cfg: EASDConfig,
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    draft_entropy: torch.Tensor,
    draft_top: torch.Tensor,
) -> torch.Tensor:
    """Apply the rule to a chain verify in place; returns where it fired [B, S].

    target_logits [B * (S + 1), V]: row b*(S+1)+j is the target's next-token logits after chain
    node j (node 0 is the last verified token). draft_tokens [B * (S + 1)]: node tokens, so the
    proposal d_k scored by row k-1 is draft_tokens[b*(S+1)+k]. draft_entropy [B, S] and
    draft_top [B, S, n] describe the draft's distribution that proposed d_1..d_S.
    """
    bsz, steps = draft_entropy.shape
    rows = target_logits.view(bsz, steps + 1, -1)[:, :steps]
    target_entropy, target_top = entropy_and_top(rows, draft_top.shape[-1])
    fired = fire(cfg, draft_entropy, draft_top, target_entropy, target_top)
    proposals = draft_tokens.view(bsz, steps + 1)[:, 1:].long()
    b, k = fired.nonzero(as_tuple=True)
    if b.numel():
        target_logits.view(bsz, steps + 1, -1)[b, k, proposals[b, k]] = float("-inf")
    return fired
