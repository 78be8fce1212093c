"""Which EDFuse path pays for a call: Triton kernels or eager PyTorch, side stream or one.

Both choices trade host time for GPU time. The Triton kernels take less GPU time than eager
PyTorch (1.5-3.1x at every measured size) but their launcher costs more host time (40-65 us a
call against eager's 18-27 us); the side stream overlaps the token half with the gate GEMM but
its fork/join costs 70-120 us of host time. So both pay where host time is free: in a CUDA
graph (a replay launches nothing from Python), or where the call's GEMMs keep the GPU busy
longer than the host needs to launch the call. Elsewhere (off the graph, few rows, a
small draft) eager PyTorch on one stream is fastest.

The readings (H200, bf16, benchmarks/results/h200-20261204/gpu_check/kernels/*.json; "hidden"
is the side stream's saving as a fraction of the shorter stream, both runs with the kernels;
calls of more rows than one chunk ran one stream either way and are left out):

    graphs (T133713Z, T133824Z)   kernels 1.5-3.1x eager at 1-4096 rows (LayerNorm d 4096/8192,
                                  SiLU*mul E 14336/28672); side stream hidden -0.01..0.18
                                  (worst: 461.8 vs 460.6 us, 70B, 1 row)
    no graphs (T133649Z, T133747Z), side stream hidden, by the GEMM work defined below:
        8B  (d 4096, E 14336)  rows 1, 16, 256   work 45 G, 45 G, 60 G    -1.23, -2.09, -0.94
        8B                     rows 1024         work 241 G               +0.27
        70B (d 8192, E 28672)  rows 1, 16, 256   work 180 G, 180 G, 241 G +0.17, +0.12, +0.14

GEMM work = W * max(rows, ROOF_ROWS), W the three weights' elements (8B 235 M, 70B 940 M): below
about ROOF_ROWS rows the GEMMs take as long as reading their weights (one-stream graph time at
1 row equals 199 rows at the 4096-row rate for 8B, 159 rows for 70B). The off-graph threshold,
GPU_BOUND_WORK, is the geometric middle of the last losing (60 G) and first winning (180 G)
work. Crossover rows off the graph: 8B from 426 rows, 70B from 1 row, the shipped SmolLM2 draft
(W 3.5 M) from 28 k rows (row chunks, so without the side stream: `edfuse_streams`). Off the
graph the kernels were only timed alone, where they beat eager only at the largest sizes
(LayerNorm 134 MB, SiLU*mul 352 MB); that they pay inside a GPU-bound call, their extra host
time hidden behind the GEMMs, is what `bench_edfuse_kernels.py` checks, path by path, against
eager on one stream.
"""

from __future__ import annotations

from typing import NamedTuple

# Rows below which the GEMMs cost as much as reading their weights (see the module docstring).
ROOF_ROWS = 192
# Off the graph, GEMM work from which the kernels and the side stream pay (8B: 426 rows).
GPU_BOUND_WORK = 1e11


class EDFusePath(NamedTuple):
    """How one EDFuse call runs: elementwise work in Triton (else eager), halves on two streams."""

    triton: bool
    side_stream: bool

    @property
    def name(self) -> str:
        return ("triton" if self.triton else "eager") + ("+side" if self.side_stream else "")

    def within(self, allowed: EDFusePath) -> EDFusePath:
        """This path with whatever `allowed` rules out turned off."""
        return EDFusePath(self.triton and allowed.triton, self.side_stream and allowed.side_stream)


EAGER = EDFusePath(triton=False, side_stream=False)
PATHS = {p.name: p for p in (EDFusePath(t, s) for t in (False, True) for s in (False, True))}


def gemm_work(rows: int, weight_elements: int) -> int:
    """The call's GEMM time in units of weight elements x rows (module docstring)."""
    return weight_elements * max(rows, ROOF_ROWS)


def choose_path(rows: int, weight_elements: int, graphed: bool) -> EDFusePath:
    """The path the measured tables favour for one call, `graphed` if it is replayed from a
    CUDA graph (module docstring)."""
    pays = graphed or gemm_work(rows, weight_elements) >= GPU_BOUND_WORK
    return EDFusePath(triton=pays, side_stream=pays)
