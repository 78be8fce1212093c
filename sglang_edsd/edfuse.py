"""EDFuse: the draft's input module (paper Sec. 3.2, Fig. 3a, App. A.2).

Defined once and used by both the SGLang serving model and the training model, so an
exported checkpoint means the same thing in both places.

    feature stream:  g = SiLU(gate([h_low | h_high]))          (target features, 2*d_t wide)
    token stream:    u = up(LayerNorm(embed(x_{t+1})))          (token embedding, d wide)
    fused:           down(g * u)                                 -> draft hidden size d

The expansion width (m in the paper: the target's FFN size; or d, or 5d) is a config
field. The two streams are independent until the product, which is what lets the GPU
path run them on two CUDA streams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EDFuse(nn.Module):
    """Gate the token stream with the target-feature stream, then project back to d."""

    def __init__(
        self,
        feature_size: int,
        hidden_size: int,
        expansion_size: int,
        token_layernorm: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        gate, up, down = self.projections(feature_size, hidden_size, expansion_size)
        self.gate = gate
        self.norm = nn.LayerNorm(hidden_size, eps=eps) if token_layernorm else nn.Identity()
        self.up = up
        self.down = down

    def projections(self, feature_size: int, hidden_size: int, expansion_size: int) -> tuple[nn.Module, ...]:
        """gate, up and down as plain linear layers; the served model shards them over TP ranks
        (`serving/edfuse_tp.py`). Each maps a tensor to a tensor, as `nn.Linear` does."""
        return (
            nn.Linear(feature_size, expansion_size, bias=False),
            nn.Linear(hidden_size, expansion_size, bias=False),
            nn.Linear(expansion_size, hidden_size, bias=False),
        )

    def feature_stream(self, features: torch.Tensor) -> torch.Tensor:
        """SiLU(gate(features)): the target-feature side of the product."""
        return F.silu(self.gate(features))

    def token_stream(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """up(LayerNorm(embeds)): the token side of the product."""
        return self.up(self.norm(token_embeds))

    def fuse(self, gated: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """down(gated * up): join the two streams."""
        return self.down(gated * up)

    def forward(self, features: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.feature_stream(features), self.token_stream(token_embeds))
