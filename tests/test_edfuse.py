"""EDFuse math, and the SGLang draft model's strict weight names matching the format."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sglang_edsd.edfuse import EDFuse


def test_edfuse_is_gated_product_of_two_streams() -> None:
    torch.manual_seed(0)
    fuse = EDFuse(feature_size=8, hidden_size=4, expansion_size=6)
    feats, emb = torch.randn(3, 8), torch.randn(3, 4)
    ln = F.layer_norm(emb, (4,), fuse.norm.weight, fuse.norm.bias, eps=1e-5)
    want = (F.silu(feats @ fuse.gate.weight.T) * (ln @ fuse.up.weight.T)) @ fuse.down.weight.T
    torch.testing.assert_close(fuse(feats, emb), want)


def test_feature_stream_gates_token_stream() -> None:
    """Zero features close the gate (SiLU(0) = 0): the output then carries no token signal."""
    fuse = EDFuse(feature_size=8, hidden_size=4, expansion_size=6)
    assert torch.count_nonzero(fuse(torch.zeros(2, 8), torch.randn(2, 4))) == 0


def test_without_layernorm_option() -> None:
    fuse = EDFuse(feature_size=8, hidden_size=4, expansion_size=6, token_layernorm=False)
    assert isinstance(fuse.norm, torch.nn.Identity)
    assert sorted(n for n, _ in fuse.named_parameters()) == ["down.weight", "gate.weight", "up.weight"]
