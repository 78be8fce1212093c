"""The rule that picks an EDFuse call's path (Triton or eager, side stream or one) from the H200
tables: its choices at the measured shapes and at its crossover."""

from __future__ import annotations

import pytest

from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_path import EAGER, PATHS, EDFusePath, choose_path


def _weights(feature_size: int, d: int, e: int) -> int:
    return sum(p.numel() for p in EDFuse(feature_size, d, e, token_layernorm=False).parameters())


# E * (features + 2 d): gate, up and down weights, features 2 d wide.
W_8B = 14336 * (8192 + 2 * 4096)  # d 4096, E 14336
W_70B = 28672 * (16384 + 2 * 8192)  # d 8192, E 28672
W_SMOLLM2 = 1536 * (1152 + 2 * 576)  # the shipped draft: d 576, E 1536
FAST = EDFusePath(triton=True, side_stream=True)


def test_weight_counts_match_the_module() -> None:
    """The docstring's W: 235 M (8B), 940 M (70B), 3.5 M (SmolLM2); a small module checks the formula."""
    assert _weights(2 * 64, 64, 96) == 96 * (2 * 64 + 2 * 64)
    assert (W_8B, W_70B, W_SMOLLM2) == (234_881_024, 939_524_096, 3_538_944)


@pytest.mark.parametrize("rows", [1, 16, 256, 1024, 4096])
@pytest.mark.parametrize("weights", [W_8B, W_70B, W_SMOLLM2])
def test_in_a_graph_the_kernels_and_the_side_stream_always_pay(rows: int, weights: int) -> None:
    assert choose_path(rows, weights, graphed=True) == FAST


@pytest.mark.parametrize(
    "rows, weights, want",
    [
        (1, W_8B, EAGER),  # measured: side stream hidden -1.23, kernels 0.36-0.64x eager alone
        (16, W_8B, EAGER),  # -2.09
        (256, W_8B, EAGER),  # -0.94
        (1024, W_8B, FAST),  # +0.27
        (1, W_70B, FAST),  # +0.17
        (16, W_70B, FAST),  # +0.12
        (256, W_70B, FAST),  # +0.14
        (8192, W_SMOLLM2, EAGER),  # a long prefill of the shipped draft
    ],
)
def test_off_the_graph_the_measured_shapes(rows: int, weights: int, want: EDFusePath) -> None:
    assert choose_path(rows, weights, graphed=False) == want


def test_off_the_graph_crossover_rows() -> None:
    """8B pays from 426 rows (1e11 work); 70B from one row; under ROOF_ROWS rows the work is flat."""
    assert choose_path(425, W_8B, graphed=False) == EAGER
    assert choose_path(426, W_8B, graphed=False) == FAST
    assert choose_path(0, W_70B, graphed=False) == FAST
    assert choose_path(191, W_8B, graphed=False) == choose_path(1, W_8B, graphed=False) == EAGER


def test_path_names_and_limits() -> None:
    assert list(PATHS) == ["eager", "eager+side", "triton", "triton+side"]
    assert all(PATHS[name].name == name for name in PATHS)
    no_side = EDFusePath(triton=True, side_stream=False)
    assert FAST.within(no_side) == PATHS["triton"] and FAST.within(EAGER) == EAGER
    assert EAGER.within(FAST) == EAGER
