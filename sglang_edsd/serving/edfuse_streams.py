"""EDFuse on the GPU serving path: two CUDA streams and the Triton kernels (paper Sec. 4.4).

    main stream:  gate GEMM (features, 2*d_t -> E) ............ wait(side) -> silu_mul -> down
    side stream:  LayerNorm kernel (embeds) -> up GEMM (d -> E) /

The streams fork after the main stream's pending work (side.wait_stream(main)) and join
before the product (main.wait_stream(side)). The side stream is one of SGLang's named
process streams, created when the model is built, i.e. before CUDA-graph capture, so the
same fork/join is recorded into and replayed from the draft-extend graph. Tensors made on
the side stream are consumed on the main stream after the join; the next fork makes the
side stream wait for the main stream again before any of its memory can be reused, the
pattern SGLang's own alternate-stream models use. No host syncs, no shape-dependent
Python branches. On CPU, or with SGLANG_EDSD_SIDE_STREAM=0 / SGLANG_EDSD_TRITON=0 for A/B
timing, the module falls back to one stream and/or eager PyTorch.
"""

from __future__ import annotations

import os

import torch

from sglang_edsd.edfuse import EDFuse

STREAM_NAME = "sglang_edsd.edfuse_side"


def _flag(name: str) -> bool:
    return os.environ.get(name, "1") != "0"


class EDFuseRunner:
    """Runs one EDFuse module eagerly (CPU) or as two fused CUDA streams (GPU)."""

    def __init__(self, edfuse: EDFuse, device: torch.device) -> None:
        self.edfuse = edfuse
        self.use_cuda = device.type == "cuda"
        self.use_triton = self.use_cuda and _flag("SGLANG_EDSD_TRITON")
        self.side_stream = None
        if self.use_cuda and _flag("SGLANG_EDSD_SIDE_STREAM"):
            from sglang.srt.runtime_context import get_stream

            self.side_stream = get_stream(STREAM_NAME)

    def __call__(self, features: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if not self.use_cuda:
            return self.edfuse(features, embeds)
        if self.side_stream is None:
            return self._join(self.edfuse.gate(features), self._token_stream(embeds))
        main = torch.cuda.current_stream()
        self.side_stream.wait_stream(main)
        with torch.cuda.stream(self.side_stream):
            up_pre = self._token_stream(embeds)
        gate_pre = self.edfuse.gate(features)
        main.wait_stream(self.side_stream)
        return self._join(gate_pre, up_pre)

    def _token_stream(self, embeds: torch.Tensor) -> torch.Tensor:
        if self.use_triton:
            from sglang_edsd.kernels import edfuse_token_stream

            return edfuse_token_stream(self.edfuse, embeds)
        return self.edfuse.token_stream(embeds)

    def _join(self, gate_pre: torch.Tensor, up_pre: torch.Tensor) -> torch.Tensor:
        if self.use_triton:
            from sglang_edsd.kernels import edfuse_join

            return edfuse_join(self.edfuse, gate_pre, up_pre)
        return self.edfuse.fuse(torch.nn.functional.silu(gate_pre), up_pre)
