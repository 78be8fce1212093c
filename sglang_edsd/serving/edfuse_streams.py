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
stream before it goes on. No host syncs, no shape-dependent Python branches. On CPU, or
with SGLANG_EDSD_SIDE_STREAM=0 / SGLANG_EDSD_TRITON=0 for A/B timing, the module falls
back to one stream and/or eager PyTorch.

The kernels are inference-only. SGLang runs the model under `torch.no_grad()`; where
autograd would record (grad mode on and a parameter or input requiring grad) the runner
runs the eager module instead, which gives the same values and their gradients.
"""

from __future__ import annotations

import torch

from sglang_edsd import envs
from sglang_edsd.edfuse import EDFuse

STREAM_NAME = "sglang_edsd.edfuse_side"


def side_stream_enabled() -> bool:
    """Whether the served model should give its runner a side stream (SGLANG_EDSD_SIDE_STREAM)."""
    return envs.SIDE_STREAM.enabled()


class EDFuseRunner:
    """Runs one EDFuse module eagerly (CPU) or as two fused CUDA streams (GPU).

    `side_stream` (CUDA only) is the token stream's stream; None runs both halves on the
    current stream. The served model passes SGLang's named process stream.
    """

    def __init__(self, edfuse: EDFuse, device: torch.device, side_stream: torch.cuda.Stream | None = None) -> None:
        if side_stream is not None and device.type != "cuda":
            raise ValueError(f"a side stream needs a CUDA device, got {device}")
        self.edfuse = edfuse
        self.params = tuple(edfuse.parameters())
        self.use_cuda = device.type == "cuda"
        self.use_triton = self.use_cuda and envs.TRITON.enabled()
        self.side_stream = side_stream

    def __call__(self, features: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if not self.use_cuda or self._autograd_records(features, embeds):
            return self.edfuse(features, embeds)
        if self.side_stream is None:
            return self._join(self.edfuse.gate(features), self._token_stream(embeds))
        main = torch.cuda.current_stream()
        self.side_stream.wait_stream(main)
        with torch.cuda.stream(self.side_stream):
            up_pre = self._token_stream(embeds)
        gate_pre = self.edfuse.gate(features)
        main.wait_stream(self.side_stream)
        up_pre.record_stream(main)
        return self._join(gate_pre, up_pre)

    def _autograd_records(self, features: torch.Tensor, embeds: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (
            features.requires_grad or embeds.requires_grad or any(p.requires_grad for p in self.params)
        )

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
