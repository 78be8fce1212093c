"""Triton kernels for EDFuse's elementwise work; the three GEMMs stay cuBLAS (torch).

EDFuse (sglang_edsd.edfuse) is

    g = SiLU(gate(features))   u = up(LayerNorm(embeds))   out = down(g * u)

Where the kernels sit, and why:

* Token stream: `layernorm` runs before the up GEMM. cuBLAS cannot take a LayerNorm
  prologue, so the normalised rows must be written once either way; the kernel makes that
  one read of x and one write of y (fp32 statistics, two-pass variance in registers).
  This stream only touches d-wide rows, so it is the cheap side.
* Feature stream: only the gate GEMM. SiLU is deliberately *not* applied here: on its own
  stream it would have to write SiLU(gate_pre), an E-wide tensor (E up to 40,960), to
  memory just to read it back at the join.
* Join: `silu_mul` reads the two E-wide GEMM outputs once and writes the product once
  (3 E-wide passes instead of eager's 5: silu read+write, mul read 2 + write). It may write
  the product over `gate_pre` (out=gate_pre), so the join needs no extra E-wide buffer;
  the down GEMM then reads it. On the two-stream GPU path the main stream waits for the
  side stream before `silu_mul` (`serving/edfuse_streams.py` holds the fork/join and why
  up_pre's memory is safe to reuse).
  Fusing SiLU*mul into the up GEMM's epilogue would save one more pass, but needs a
  custom GEMM in place of cuBLAS, which this design keeps.

Folding LayerNorm into the embedding table after training (the paper's suggestion:
LN(embed(v)) depends only on the token, so a table of LN outputs gives the same numbers
this kernel would write) removes the LayerNorm launch, but it is not the default here:
SGLang shares the *target's* embedding with the draft, and the draft's decoder layer also
consumes the raw embedding, so folding needs a second vocab x d table (128k x 4096 bf16 =
1 GiB for a Llama-3-8B target) to save a d-wide kernel that runs only in draft-extend.
Folding is left to a checkpoint exporter for drafts that own their embedding.

Kernels load any of fp32/bf16/fp16, compute in fp32 and round once to the output dtype.
They are inference-only (no autograd). Whether they run interpreted (TRITON_INTERPRET=1,
CPU tensors) or compiled (CUDA tensors) is fixed when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import nn
from triton.runtime.interpreter import InterpretedFunction

from sglang_edsd.edfuse import EDFuse

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# One row lives in registers as a single tile; past this a row would spill.
MAX_LAYERNORM_COLS = 16384
_SILU_MUL_BLOCK = 2048


@dataclass(frozen=True)
class LayerNormConfig:
    """Launch shape of the LayerNorm kernel, a table entry so that the benchmark can time
    candidates (`bench_edfuse_kernels.py --parts layernorm-configs`).

    A program normalises tile // (padded d) rows, at least one (one d = 576 row alone would
    leave most of a program idle); each thread holds `per_thread` elements (num_warps, 1..16,
    follows); `evict_first` loads x with L2's evict-first policy: x is read once, while every
    program re-reads weight and bias.
    """

    tile: int = 2048
    per_thread: int = 16
    evict_first: bool = False

    def launch(self, n_rows: int, n_cols: int) -> tuple[int, int, int]:
        """(BLOCK_M, BLOCK_N, num_warps) for n_rows rows of n_cols."""
        block_n = triton.next_power_of_2(n_cols)
        block_m = min(max(1, self.tile // block_n), triton.next_power_of_2(n_rows))
        num_warps = min(16, max(1, block_m * block_n // (32 * self.per_thread)))
        return block_m, block_n, num_warps


# Candidates the benchmark times (bf16, CUDA graphs, >= 64 MB); "current" is the default.
# (BLOCK_M, num_warps) at d = 4096 / 8192 after each.
LAYERNORM_CANDIDATES = {
    "current": LayerNormConfig(),  # (1, 8) / (1, 16)
    "current+evict": LayerNormConfig(evict_first=True),  # (1, 8) / (1, 16)
    "t2k-32pt": LayerNormConfig(per_thread=32),  # (1, 4) / (1, 8)
    "t2k-64pt": LayerNormConfig(per_thread=64),  # (1, 2) / (1, 4)
    "t2k-64pt+evict": LayerNormConfig(per_thread=64, evict_first=True),  # (1, 2) / (1, 4)
    "t8k-32pt": LayerNormConfig(tile=8192, per_thread=32),  # (2, 8) / (1, 8)
    "t16k-32pt": LayerNormConfig(tile=16384, per_thread=32),  # (4, 16) / (2, 16)
    "t16k-64pt": LayerNormConfig(tile=16384, per_thread=64),  # (4, 8) / (2, 8)
}
LAYERNORM_CONFIG = LAYERNORM_CANDIDATES["current"]


@triton.jit
def _layernorm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    n_rows,
    n_cols,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    X_EVICTION: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    offs = rows[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0, eviction_policy=X_EVICTION).to(tl.float32)
    mean = tl.sum(x, axis=1) / n_cols
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, n_elements, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    g = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


INTERPRETED = isinstance(_layernorm_kernel, InterpretedFunction)
# The interpreter runs on host memory; compiled kernels need device memory.
KERNEL_DEVICE_TYPE = "cpu" if INTERPRETED else "cuda"


def _check(
    name: str,
    t: object,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Metadata-only checks (no host sync), so they are safe under CUDA-graph capture."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float32, bfloat16, float16")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {dtype}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if device is None and t.device.type != KERNEL_DEVICE_TYPE:
        mode = "TRITON_INTERPRET=1 (CPU)" if INTERPRETED else "compiled Triton (CUDA)"
        raise ValueError(f"{name} is on {t.device}; kernels run in {mode} mode and need {KERNEL_DEVICE_TYPE} tensors")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    if t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"{name} requires grad; these kernels are inference-only "
            "(run under torch.no_grad() or torch.inference_mode())"
        )
    return t


def _check_out(out: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
    """`out` may be exactly an input (each element is read before it is written by the
    same program) but must not partially overlap one."""
    lo, hi = out.data_ptr(), out.data_ptr() + out.numel() * out.element_size()
    for name, t in inputs.items():
        t_lo, t_hi = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
        if (t_lo, t_hi) != (lo, hi) and t_lo < hi and lo < t_hi:
            raise ValueError(f"out partially overlaps {name}; use a separate buffer or {name} itself")


def layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    *,
    out: torch.Tensor | None = None,
    config: LayerNormConfig = LAYERNORM_CONFIG,
) -> torch.Tensor:
    """LayerNorm over the last dim of a contiguous (..., d) tensor, output in x's dtype.

    Weight and bias may be any supported dtype (e.g. fp32 params with bf16 activations).
    With `out` given nothing is allocated and nothing syncs (CUDA-graph safe).
    """
    _check("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dim (the normalised one)")
    n_cols = x.shape[-1]
    if not 0 < n_cols <= MAX_LAYERNORM_COLS:
        raise ValueError(f"layernorm supports 1..{MAX_LAYERNORM_COLS} columns, got {n_cols}")
    _check("weight", weight, shape=(n_cols,), device=x.device)
    _check("bias", bias, shape=(n_cols,), device=x.device)
    if out is None:
        out = torch.empty_like(x)
    else:
        _check("out", out, shape=tuple(x.shape), dtype=x.dtype, device=x.device)
        _check_out(out, {"x": x})
    launch_layernorm(x, weight, bias, eps, out, config)
    return out


def launch_layernorm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out: torch.Tensor, config: LayerNormConfig
) -> object:
    """The launch behind `layernorm`, unchecked. Returns Triton's handle of the compiled
    kernel (n_regs, n_spills: what the benchmark reports) or None (interpreter, no rows)."""
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    if n_rows == 0:
        return None
    block_m, block_n, num_warps = config.launch(n_rows, n_cols)
    return _layernorm_kernel[(triton.cdiv(n_rows, block_m),)](
        x,
        weight,
        bias,
        out,
        n_rows,
        n_cols,
        float(eps),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        X_EVICTION="evict_first" if config.evict_first else "",
        num_warps=num_warps,
    )


def silu_mul(gate_pre: torch.Tensor, up_pre: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """SiLU(gate_pre) * up_pre in one pass, output in the inputs' dtype.

    `out` may be `gate_pre` or `up_pre` itself (in-place join). With `out` given nothing is
    allocated and nothing syncs (CUDA-graph safe).
    """
    _check("gate_pre", gate_pre)
    _check("up_pre", up_pre, shape=tuple(gate_pre.shape), dtype=gate_pre.dtype, device=gate_pre.device)
    if out is None:
        out = torch.empty_like(gate_pre)
    else:
        _check("out", out, shape=tuple(gate_pre.shape), dtype=gate_pre.dtype, device=gate_pre.device)
        _check_out(out, {"gate_pre": gate_pre, "up_pre": up_pre})
    n = gate_pre.numel()
    if n == 0:
        return out
    _silu_mul_kernel[(triton.cdiv(n, _SILU_MUL_BLOCK),)](
        gate_pre,
        up_pre,
        out,
        n,
        BLOCK=_SILU_MUL_BLOCK,
        num_warps=8,
    )
    return out


def edfuse_token_stream(module: EDFuse, embeds: torch.Tensor) -> torch.Tensor:
    """up(LayerNorm(embeds)) with the LayerNorm kernel: the side stream's whole work."""
    if isinstance(module.norm, nn.LayerNorm):
        norm = module.norm
        embeds = layernorm(embeds.contiguous(), norm.weight, norm.bias, norm.eps)
    elif not isinstance(module.norm, nn.Identity):
        raise TypeError(f"EDFuse.norm must be LayerNorm or Identity, got {type(module.norm).__name__}")
    return module.up(embeds)


def edfuse_join(module: EDFuse, gate_pre: torch.Tensor, up_pre: torch.Tensor) -> torch.Tensor:
    """down(SiLU(gate_pre) * up_pre), the product written over gate_pre: the join."""
    return module.down(silu_mul(gate_pre, up_pre, out=gate_pre))


def fused_edfuse_forward(module: EDFuse, features: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """EDFuse.forward with the kernels around torch GEMMs, on one stream.

    The serving path (`serving.edfuse_streams.EDFuseRunner`) runs the same two halves,
    `edfuse_token_stream` on a side stream and `edfuse_join` after it.
    """
    if features.shape[:-1] != embeds.shape[:-1]:
        raise ValueError(
            f"features {tuple(features.shape)} and embeds {tuple(embeds.shape)} must share leading (token) dims"
        )
    if features.shape[-1] != module.gate.in_features:
        raise ValueError(f"features width {features.shape[-1]} != gate input {module.gate.in_features}")
    if embeds.shape[-1] != module.up.in_features:
        raise ValueError(f"embeds width {embeds.shape[-1]} != up input {module.up.in_features}")
    return edfuse_join(module, module.gate(features), edfuse_token_stream(module, embeds))
