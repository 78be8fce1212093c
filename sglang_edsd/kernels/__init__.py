"""Triton kernels for the draft's elementwise work (see `edfuse_triton` for the design).

Importing this package imports Triton and fixes interpreted vs compiled mode
(TRITON_INTERPRET); it is kept out of `sglang_edsd/__init__` so nothing else pays for it.
"""

from sglang_edsd.kernels.edfuse_triton import (
    INTERPRETED,
    KERNEL_DEVICE_TYPE,
    LAYERNORM_CANDIDATES,
    LAYERNORM_CONFIG,
    MAX_LAYERNORM_COLS,
    SUPPORTED_DTYPES,
    LayerNormConfig,
    edfuse_join,
    edfuse_token_stream,
    fused_edfuse_forward,
    launch_layernorm,
    layernorm,
    silu_mul,
)

__all__ = [
    "INTERPRETED",
    "KERNEL_DEVICE_TYPE",
    "LAYERNORM_CANDIDATES",
    "LAYERNORM_CONFIG",
    "MAX_LAYERNORM_COLS",
    "SUPPORTED_DTYPES",
    "LayerNormConfig",
    "edfuse_join",
    "edfuse_token_stream",
    "fused_edfuse_forward",
    "launch_layernorm",
    "layernorm",
    "silu_mul",
]
