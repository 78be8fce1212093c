"""EDFuse on the GPU serving path: two CUDA streams and the Triton kernels (paper Sec. 4.4).

    main stream:  gate GEMM (features, 2*d_t -> E) ............ wait(side) -> silu_mul -> down
    side stream:  LayerNorm kernel (embeds) -> up GEMM (d -> E) /

The streams fork after the main stream's pending work (side.wait_stream(main)) and join
before the product (main.wait_stream(side)). The side stream is one of SGLang's named
process streams, created when the model is built, i.e. before CUDA-graph capture, so the
same fork/join is recorded into and replayed from the draft-extend graph. `up_pre`, made on
the side stream and read on the main one after the join, is marked with
`record_stream(main)`, so the caching allocator does not hand its memory to the next
side-stream allocation before the main stream's join has read it (the next fork's wait
already orders that for this runner; the mark makes it hold for any later user of the
stream). Inputs made on the main stream need no mark: the main stream waits for the side
stream before it goes on. No host syncs; the shape-dependent Python branches, the path and
the row chunk count below, are fixed for a captured graph's static shape.

Each call takes the path, Triton or eager elementwise work and two streams or one, that the
rule in `serving/edfuse_path.py` derives from the H200 tables: in a CUDA graph the kernels
and the side stream; off the graph the same only where the call's GEMMs hide their extra host
time, else eager PyTorch on one stream. A graph's warm-up runs must take the path its capture
takes: Triton loads a kernel on its first launch, which stream capture forbids. So the rule
sees a graph only where `graph_mode` says so (in SGLang: `get_is_capture_mode`, on through a
graph's warm-ups and its capture), not where a stream merely captures. SGLANG_EDSD_TRITON=0 /
SGLANG_EDSD_SIDE_STREAM=0 rule either out (A/B timing); a `path` given to the runner is taken
as is (the benchmark's alternatives). `path_counts` counts calls per path name (in a graph:
the warm-ups and captures, not the replays). On CPU the rule is eager PyTorch on one stream.

Row chunks bound the E-wide temporaries of a long draft-extend (a prefill chunk of 8192
tokens makes gate and up outputs of about 235 MB each at m = 14336 in bf16). A call with more
rows than fit in CHUNK_BYTES per E-wide temporary (E = this rank's share of m) runs as the
fewest near-equal row chunks that fit, one after another on the current stream, and
concatenates the d-wide outputs. The kernel path then holds two E-wide temporaries
(gate_pre, up_pre; the product is written over gate_pre), eager PyTorch three. Chunks run
without the side stream: under graph capture a `record_stream`-marked buffer is not reused
before the capture ends, so a forked chunk loop would hold one up_pre per chunk. The small
draft-extends that CUDA graphs capture stay one chunk and keep the fork/join (draft decode
steps skip EDFuse); a chunked call keeps the rule's choice of kernels. Rows are independent,
so chunking changes no value as long as the GEMM library computes a row the same way at both
row counts (on CPU equal to rounding; near-equal chunks keep every chunk at least half the
bound's rows, far from the few-row kernels).

The kernels are inference-only. SGLang runs the model under `torch.no_grad()`; where
autograd would record (grad mode on and a parameter or input requiring grad) the runner
runs the eager module instead, unchunked, which gives the same values and their gradients.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import torch

from sglang_edsd import envs
from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_path import EAGER, EDFusePath, choose_path

logger = logging.getLogger(__name__)

STREAM_NAME = "sglang_edsd.edfuse_side"
# Bytes one E-wide temporary may hold in a call: 1170 rows at m = 14336 in bf16.
CHUNK_BYTES = 32 * 2**20


def chunk_bounds(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """[start, stop) of the fewest near-equal chunks of at most `max_rows` covering `rows`."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    count = max(1, -(-rows // max_rows))
    size, extra = divmod(rows, count)
    bounds, start = [], 0
    for i in range(count):
        stop = start + size + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def side_stream_enabled() -> bool:
    """Whether the served model should give its runner a side stream (SGLANG_EDSD_SIDE_STREAM)."""
    return envs.SIDE_STREAM.enabled()


class EDFuseRunner:
    """Runs one EDFuse module on the path each call pays for (module docstring).

    `side_stream` (CUDA only) is the token half's stream; None runs both halves on the current
    stream. The served model passes SGLang's named process stream. `chunk_bytes` bounds one
    E-wide temporary (module docstring). `graph_mode` says whether a call belongs to a CUDA
    graph, its warm-ups included (SGLang's `get_is_capture_mode`). `path` fixes the path for
    every call instead of the rule (A/B timing; Triton needs the device the kernels run on, a
    side stream one given here).
    """

    def __init__(
        self,
        edfuse: EDFuse,
        device: torch.device,
        side_stream: torch.cuda.Stream | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        graph_mode: Callable[[], bool] | None = None,
        path: EDFusePath | None = None,
    ) -> None:
        if side_stream is not None and device.type != "cuda":
            raise ValueError(f"a side stream needs a CUDA device, got {device}")
        if path is not None and path.side_stream and side_stream is None:
            raise ValueError(f"path {path.name} needs a side stream")
        if path is not None and path.triton:
            from sglang_edsd.kernels import KERNEL_DEVICE_TYPE

            if device.type != KERNEL_DEVICE_TYPE:
                raise ValueError(f"path {path.name} runs the kernels on {KERNEL_DEVICE_TYPE}, not {device}")
        self.edfuse = edfuse
        self.params = tuple(edfuse.parameters())
        self.use_cuda = device.type == "cuda"
        self.side_stream = side_stream
        self.chunk_bytes = chunk_bytes
        self.graph_mode = graph_mode
        self.path = path
        # What the rule may choose: the env switches rule the kernels or the side stream out.
        self.allowed = EDFusePath(
            triton=self.use_cuda and envs.TRITON.enabled(),
            side_stream=side_stream is not None and envs.SIDE_STREAM.enabled(),
        )
        self.width = edfuse.gate.weight.shape[0]  # this rank's share of m
        self.weight_elements = sum(layer.weight.numel() for layer in (edfuse.gate, edfuse.up, edfuse.down))
        self.path_counts: Counter[str] = Counter()

    def max_rows(self, dtype: torch.dtype) -> int:
        """Rows per chunk: one E-wide temporary of `dtype` holds at most `chunk_bytes`."""
        return max(1, self.chunk_bytes // (self.width * dtype.itemsize))

    def choose(self, rows: int) -> EDFusePath:
        """The path of a call of `rows` rows: the fixed one, else the rule within `allowed`."""
        if self.path is not None:
            return self.path
        if not self.use_cuda:
            return EAGER
        graphed = self.graph_mode is not None and self.graph_mode()
        return choose_path(rows, self.weight_elements, graphed).within(self.allowed)

    def __call__(self, features: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if self._autograd_records(features, embeds):
            self._record(EAGER, features.shape[0])
            return self.edfuse(features, embeds)
        rows = features.shape[0]
        bounds = chunk_bounds(rows, self.max_rows(features.dtype))
        path = self.choose(rows)
        if len(bounds) > 1:
            path = path._replace(side_stream=False)  # chunks run on the current stream (module docstring)
        self._record(path, rows)
        if len(bounds) == 1:
            return self._forward(features, embeds, path)
        return torch.cat([self._forward(features[a:b], embeds[a:b], path) for a, b in bounds])

    def _record(self, path: EDFusePath, rows: int) -> None:
        if path.name not in self.path_counts:
            logger.debug("EDFuse runner: first %s call (%d rows)", path.name, rows)
        self.path_counts[path.name] += 1

    def _forward(self, features: torch.Tensor, embeds: torch.Tensor, path: EDFusePath) -> torch.Tensor:
        if not path.side_stream:
            return self._join(self.edfuse.gate(features), self._token_stream(embeds, path.triton), path.triton)
        main = torch.cuda.current_stream()
        self.side_stream.wait_stream(main)
        with torch.cuda.stream(self.side_stream):
            up_pre = self._token_stream(embeds, path.triton)
        gate_pre = self.edfuse.gate(features)
        main.wait_stream(self.side_stream)
        up_pre.record_stream(main)
        return self._join(gate_pre, up_pre, path.triton)

    def _autograd_records(self, features: torch.Tensor, embeds: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (
            features.requires_grad or embeds.requires_grad or any(p.requires_grad for p in self.params)
        )

    def _token_stream(self, embeds: torch.Tensor, triton: bool) -> torch.Tensor:
        if triton:
            from sglang_edsd.kernels import edfuse_token_stream

            return edfuse_token_stream(self.edfuse, embeds)
        return self.edfuse.token_stream(embeds)

    def _join(self, gate_pre: torch.Tensor, up_pre: torch.Tensor, triton: bool) -> torch.Tensor:
        if triton:
            from sglang_edsd.kernels import edfuse_join

            return edfuse_join(self.edfuse, gate_pre, up_pre)
        return self.edfuse.fuse(torch.nn.functional.silu(gate_pre), up_pre)
