"""Few-row GEMM route for SGLang's linear layers and lm_head on CPU.

Why: with torch's CPU BLAS, `F.linear(x, W)` for a handful of rows costs nearly one
matrix-vector pass per row (SmolLM2's lm_head: 14 ms for 1 row, 36 ms for 5), while the same
product computed as `W @ x.T` makes one pass over W (9.6 ms for 5 rows). A verify pass of a
depth-4 chain has 5 rows per request, so speculative decoding on CPU paid most of its verify
cost here (`benchmarks/bench_cpu_gemm.py` measures every SmolLM2 shape). Only float32
inputs of 2..MAX_ROWS rows take the route: one-row decode and prefill keep SGLang's own call,
so a server without speculation computes exactly what it did before.
Off with SGLANG_EDSD_CPU_GEMM=0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sglang_edsd import envs

MAX_ROWS = 64  # measured faster up to here for every SmolLM2 shape; prefill-sized inputs stay on F.linear
LINEAR_TARGET = "sglang.srt.layers.quantization.unquant.UnquantizedLinearMethod.apply"
LINEAR_ANCHOR = "return F.linear(x, layer.weight, bias)"
LM_HEAD_TARGET = "sglang.srt.layers.logits_processor.LogitsProcessor._compute_lm_head"
LM_HEAD_ANCHOR = "hidden_states.to(lm_head.weight.dtype), lm_head.weight.T"


def enabled() -> bool:
    return envs.CPU_GEMM.enabled()


def takes_route(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True for CPU float32 activations of 2..MAX_ROWS rows against a plain CPU float32 weight.

    Called on every linear layer of every forward, so the cheap row test comes first.
    """
    if x.dim() < 2:
        return False
    rows = x.numel() // x.shape[-1]
    return (
        2 <= rows <= MAX_ROWS
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.dim() == 2
        and type(weight.data) is torch.Tensor
    )


def few_row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed as one pass over `weight`; contiguous like F.linear's."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.mm(weight, flat.t()).t().contiguous()
    if bias is not None:
        out += bias
    return out.view(*x.shape[:-1], weight.shape[0])


def _linear_apply(
    original: Callable[..., torch.Tensor],
    self: Any,
    layer: torch.nn.Module,
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    if not takes_route(x, layer.weight) or getattr(layer, "use_intel_amx_backend", False):
        return original(self, layer, x, bias)
    return few_row_linear(x, layer.weight, bias)


def _compute_lm_head(
    original: Callable[..., torch.Tensor],
    self: Any,
    hidden_states: torch.Tensor,
    lm_head: torch.nn.Module,
    embedding_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Route only the branch SGLang ends in for a plain unquantized lm_head (`hidden @ W.T`)."""
    from sglang.srt.layers.logits_processor import should_apply_lm_head_quant_method
    from sglang.srt.utils.common import use_intel_amx_backend

    weight = getattr(lm_head, "weight", None)
    plain = (
        weight is not None
        and not hasattr(lm_head, "set_lora")
        and not should_apply_lm_head_quant_method(lm_head, getattr(lm_head, "quant_method", None))
        and not self.use_fp32_lm_head
        and not use_intel_amx_backend(lm_head)
        and self.rl_on_policy_target is None
    )
    if not plain or not takes_route(hidden_states, weight):
        return original(self, hidden_states, lm_head, embedding_bias, **kwargs)
    return few_row_linear(hidden_states, weight)


def register_hooks() -> bool:
    """Register the route with SGLang's HookRegistry (applied by load_plugins); False when off."""
    if not enabled():
        return False
    from sglang.srt.layers.logits_processor import LogitsProcessor
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sglang_edsd.patches import guard

    guard(UnquantizedLinearMethod.apply, LINEAR_ANCHOR, __name__)
    guard(LogitsProcessor._compute_lm_head, LM_HEAD_ANCHOR, __name__)
    HookRegistry.register(LINEAR_TARGET, _linear_apply, HookType.AROUND)
    HookRegistry.register(LM_HEAD_TARGET, _compute_lm_head, HookType.AROUND)
    return True
