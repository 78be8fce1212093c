"""Run the target once over a packed micro-batch of samples (online EDTrain).

Why: one forward per sample leaves a large GPU mostly idle (at Llama-3.1-8B shape the
per-sample target forward used ~15% of an H200's bf16 peak), while a packed micro-batch of
`batch_tokens` rows keeps its GEMMs large. Samples are concatenated into one row with their
own positions (RoPE restarts at 0 per sample), and attention runs per sample: a registered
transformers attention function calls causal SDPA on each sample's rows, so no sample sees
another's keys and no (T, T) block-diagonal mask is built or computed. Every other layer is
row-wise, so each sample's features equal its own forward's up to GEMM rounding
(tests/test_capture.py checks it against `run_target`).

Relies on transformers' AttentionInterface (functional attention; every Llama-style model
in transformers 5 has it). A model that cannot switch to it fails here, by name, rather
than silently attending across samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sglang_edsd.capture.layout import CaptureError
from sglang_edsd.capture.writer import target_features

ATTENTION = "sglang_edsd_packed"
SEGMENTS = "sglang_edsd_segments"  # forward kwarg the attention function reads


def _packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each [a, b) row segment of a (1, heads, T, head_dim) batch."""
    segments = kwargs.get(SEGMENTS)
    if not isinstance(segments, list):
        raise CaptureError(f"the {ATTENTION!r} attention needs the {SEGMENTS!r} forward argument (packed rows)")
    out = torch.cat(
        [
            F.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=True
            )
            for a, b in segments
        ],
        dim=2,
    )
    return out.transpose(1, 2).contiguous(), None


def use_packed_attention(model: torch.nn.Module) -> None:
    """Switch `model` (a transformers causal LM) to per-sample attention over packed rows."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _packed_attention)
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(ATTENTION)
    if getattr(model.config, "_attn_implementation", None) != ATTENTION:
        raise CaptureError(
            f"{type(model).__name__} cannot switch to a registered attention function in this transformers "
            "version, which packed online training needs; train from a capture, or use --batch-tokens 0"
        )


def packed_target_features(
    model: torch.nn.Module, samples: Sequence[torch.Tensor], layer_ids: Sequence[int], storage: torch.dtype
) -> list[dict[str, torch.Tensor]]:
    """`target_features` of each 1-D id tensor in `samples` from one forward over all of them,
    on the model's device. The model must have gone through `use_packed_attention`."""
    if getattr(model.config, "_attn_implementation", None) != ATTENTION:
        raise CaptureError("packed_target_features needs a model switched by use_packed_attention")
    if not samples or min(int(s.numel()) for s in samples) < 1:
        raise CaptureError("packed_target_features needs one or more non-empty samples")
    device = next(model.parameters()).device
    lengths = [int(s.numel()) for s in samples]
    bounds = torch.tensor([0, *lengths]).cumsum(0).tolist()
    segments = list(zip(bounds[:-1], bounds[1:]))
    ids = torch.cat(list(samples)).to(device, torch.long)
    positions = torch.cat([torch.arange(n) for n in lengths]).to(device)[None]
    feats = target_features(model, ids, layer_ids, storage, position_ids=positions, **{SEGMENTS: segments})
    return [{k: v[a:b] for k, v in feats.items()} for a, b in segments]
