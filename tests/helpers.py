"""Helpers several test modules share (edit a draft folder in place, chat prompts as token ids,
EDFuse's rounding-error bound)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sglang_edsd.edfuse import EDFuse


def edit_config(draft: Path, edit) -> None:
    cfg = json.loads((draft / "config.json").read_text())
    edit(cfg)
    (draft / "config.json").write_text(json.dumps(cfg))


def edit_weights(draft: Path, edit) -> None:
    tensors = load_file(str(draft / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(draft / "model.safetensors"))


def chat_ids(model: Path, prompt: str) -> list[int]:
    """`prompt` as one user turn through the model's chat template, as token ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


# Unit roundoff of each storage dtype (round to nearest): half the spacing of numbers near 1.
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def edfuse_error_bound(fuse: EDFuse, features: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact, bound): EDFuse.forward in float64 on the module's own (already rounded) weights and
    inputs, and a per-element bound on how far a forward in the inputs' dtype may land from it.

    Why: a low-precision GEMM's error scales with sum |x_k w_k|, not with |output|, so near-zero
    outputs make any rtol/atol pair arbitrary; this bound follows each output's own sums.
    First-order rounding analysis with absolute values, for the eager forward (each op computes
    in fp32 and rounds its output once to the storage dtype, unit roundoff u):
      GEMM y = x @ W^T over K terms, fp32 sums (gamma_K = K * 2^-24), input error bound e_x:
          e_y = u|y| + gamma_K (|x| @ |W|^T) + e_x @ |W|^T
      s = SiLU(g), |SiLU'| <= 1.1:      e_s = 1.1 e_g + u|s|
      n = LayerNorm(e), e exact:        e_n = u|n| + gamma_2d (|w * x_hat| + |b|)
          (x_hat the normalized input; the small term covers fp32 mean/variance over d terms
          and the affine's roundings)
      p = s * t:                        e_p = u|p| + |s| e_t + |t| e_s
    u^2 terms and an op's own fp32 error (a few 2^-24 relative, far below the gamma terms) are
    left out. Worst case: it takes every propagated error with the sign of its weight, so it is
    loose by about sqrt(K) per GEMM. Needs the token LayerNorm (EDFuse's default).
    """
    u = UNIT_ROUNDOFF[features.dtype]
    exact = copy.deepcopy(fuse).double()
    f, e = features.double(), embeds.double()

    def gemm(layer: nn.Linear, x: torch.Tensor, err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, w = layer(x), layer.weight.abs()
        return y, u * y.abs() + x.shape[-1] * 2.0**-24 * (x.abs() @ w.T) + err @ w.T

    with torch.no_grad():
        g, e_g = gemm(exact.gate, f, torch.zeros_like(f))
        s = F.silu(g)
        e_s = 1.1 * e_g + u * s.abs()
        norm = exact.norm
        normalized = F.layer_norm(e, norm.normalized_shape, eps=norm.eps)
        n = normalized * norm.weight + norm.bias
        e_n = u * n.abs() + 2 * e.shape[-1] * 2.0**-24 * ((normalized * norm.weight).abs() + norm.bias.abs())
        t, e_t = gemm(exact.up, n, e_n)
        p = s * t
        e_p = u * p.abs() + s.abs() * e_t + t.abs() * e_s
        return gemm(exact.down, p, e_p)
