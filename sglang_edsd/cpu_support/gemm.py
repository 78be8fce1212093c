"""Few-row GEMM route for SGLang's linear layers and lm_head on CPU.

Why: with torch's CPU BLAS, `F.linear(x, W)` on a handful of rows costs far more than one pass
over W once there are more than two (torch 2.14.1, 2 threads, SmolLM2: lm_head 3.5 ms for 1 row,
8.4 ms for 5; all decoder GEMMs, weights from memory, 16.8 ms for 1 row, 30.3 ms for 5), while
oneDNN's GEMM on a weight packed once into its blocked layout nearly does (lm_head 4.7 ms, the
decoder GEMMs 26.4 ms for 5 rows). A depth-4 chain's verify has 5 rows per request and a draft
tree more, so speculative decoding on CPU paid much of its verify cost here
(`benchmarks/bench_cpu_gemm.py`, `benchmarks/results/cpu-gemm-smollm2.json`). Only float32
inputs of MIN_ROWS..MAX_ROWS rows take the route, and two-row inputs where it is faster: one-row
decode and prefill keep SGLang's call, so a server without speculation at batch 1 computes exactly
what it did before. Which GEMM wins at two rows depends on the host: BLAS on the 2-core host of
`cpu-gemm-smollm2.json` (all decoder GEMMs 18.7 vs 24.7 ms), the packed GEMM by 2.8x on the
2-core AMD EPYC of `cpu-gemm-two-rows-20261205.json`, whose BLAS is slow at one and two rows
(57.4 vs 21.4 ms; both in benchmarks/results/).
Two rows are a depth-1 chain's verify, and the entropy stop's most common cut, so each weight's
first two-row call times both GEMMs and keeps the faster for the process. A row's result does
not depend on how many rows share the call (checked in tests/test_cpu_gemm.py), so a verify
computes each draft position as a 3-row or a 9-row call would.

The packed copy is made on first use and kept beside the weight (one extra copy of each routed
weight in memory); it is remade after an in-place update of the weight tensor and after any of
SGLang's weight-update calls (which write through `.data`, invisible to version counters). The
route uses torch's oneDNN ops `mkldnn._reorder_linear_weight` and `mkldnn._linear_pointwise`
(what inductor's CPU freezing uses); where torch lacks them the route stays off and says why.
Off with SGLANG_EDSD_CPU_GEMM=0.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sglang_edsd import envs

logger = logging.getLogger(__name__)

MIN_ROWS = 3  # from three rows on the packed GEMM wins on every host measured
TIMED_ROWS = 2  # the host decides: each weight times both GEMMs on its first two-row call
TIMED_CALLS = 7  # per GEMM, interleaved, after one warm-up call each (the first packs the weight)
MAX_ROWS = 64  # verify and draft-tree sizes; prefill-sized inputs stay on F.linear
LINEAR_TARGET = "sglang.srt.layers.quantization.unquant.UnquantizedLinearMethod.apply"
LINEAR_ANCHOR = "return F.linear(x, layer.weight, bias)"
LM_HEAD_TARGET = "sglang.srt.layers.logits_processor.LogitsProcessor._compute_lm_head"
LM_HEAD_ANCHOR = "hidden_states.to(lm_head.weight.dtype), lm_head.weight.T"
ONEDNN_OPS = ("_reorder_linear_weight", "_linear_pointwise")
WEIGHT_UPDATER = "sglang.srt.model_executor.model_runner_components.weight_updater.WeightUpdater"
WEIGHT_UPDATES = (
    "update_weights_from_disk",
    "update_weights_from_tensor",
    "update_weights_from_ipc",
    "load_weights_from_distributed",
    "receive_weights_from_distributed",
    "end_weight_update",
)
_weights_generation = 0  # bumped by every SGLang weight update; packed copies of older ones are stale


def enabled() -> bool:
    return envs.CPU_GEMM.enabled()


def missing_onednn_ops() -> list[str]:
    """The oneDNN ops the route needs that this torch build lacks ([] when it can run)."""
    if not torch.backends.mkldnn.is_available():
        return ["mkldnn backend"]
    return [name for name in ONEDNN_OPS if not hasattr(torch.ops.mkldnn, name)]


def takes_route(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True for CPU float32 activations of MIN_ROWS..MAX_ROWS rows against a plain CPU float32
    weight, and of TIMED_ROWS rows where the packed GEMM is the faster for this weight.

    Called on every linear layer of every forward, so the cheap row test comes first.
    """
    if x.dim() < 2:
        return False
    rows = x.numel() // x.shape[-1]
    routable = (
        TIMED_ROWS <= rows <= MAX_ROWS
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.dim() == 2
        and type(weight.data) is torch.Tensor
    )
    return routable and (rows >= MIN_ROWS or packed_is_faster(x, weight))


def packed_is_faster(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the packed GEMM beats F.linear on `x` for this weight: timed on the first call, then kept."""
    choice = getattr(weight, "_edsd_packed_faster", None)
    if choice is None:
        packed, blas = _median_seconds(lambda: few_row_linear(x, weight), lambda: F.linear(x, weight))
        choice = weight._edsd_packed_faster = packed < blas
        logger.debug("sglang-edsd: %s-row GEMM on %s weight: %s", TIMED_ROWS, tuple(weight.shape), choice)
    return choice


def _median_seconds(*calls: Callable[[], torch.Tensor]) -> list[float]:
    """Median wall time of each call, run interleaved so drift in the machine's speed falls on all."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(TIMED_CALLS):
        for call, spent in zip(calls, times):
            start = time.perf_counter()
            call()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def _packed(weight: torch.Tensor) -> torch.Tensor:
    """oneDNN's blocked copy of `weight`, made once and remade after an in-place update."""
    cached = getattr(weight, "_edsd_onednn", None)
    key = (weight.data_ptr(), weight._version, _weights_generation)
    if cached is None or cached[0] != key:
        cached = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        weight._edsd_onednn = cached
    return cached[1]


def few_row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` as one oneDNN GEMM over the packed weight; contiguous like F.linear's."""
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.ops.mkldnn._linear_pointwise(flat, _packed(weight), bias, "none", [], "")
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


def _weights_updated(original: Callable[..., Any], self: Any, *args: Any, **kwargs: Any) -> Any:
    global _weights_generation
    try:
        return original(self, *args, **kwargs)
    finally:
        _weights_generation += 1


def register_hooks() -> bool:
    """Register the route with SGLang's HookRegistry (applied by load_plugins); False when off."""
    if not enabled():
        return False
    missing = missing_onednn_ops()
    if missing:
        logger.warning("sglang-edsd: few-row GEMM route off, this torch lacks oneDNN's %s", ", ".join(missing))
        return False
    from sglang.srt.layers.logits_processor import LogitsProcessor
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sglang_edsd.patches import guard

    guard(UnquantizedLinearMethod.apply, LINEAR_ANCHOR, __name__)
    guard(LogitsProcessor._compute_lm_head, LM_HEAD_ANCHOR, __name__)
    from sglang.srt.model_executor.model_runner_components.weight_updater import WeightUpdater

    for name in WEIGHT_UPDATES:  # a renamed update path must not leave stale packed weights
        guard(getattr(WeightUpdater, name), "def " + name, __name__)
        HookRegistry.register(f"{WEIGHT_UPDATER}.{name}", _weights_updated, HookType.AROUND)
    HookRegistry.register(LINEAR_TARGET, _linear_apply, HookType.AROUND)
    HookRegistry.register(LM_HEAD_TARGET, _compute_lm_head, HookType.AROUND)
    return True
