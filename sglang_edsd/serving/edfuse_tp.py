"""EDFuse sharded over tensor-parallel ranks with SGLang's own parallel linear layers.

    gate: ColumnParallelLinear over m   rank r holds rows [r*m/tp, (r+1)*m/tp) of the full weight
    up:   ColumnParallelLinear over m   the same rows
    down: RowParallelLinear over m      the same columns; one all-reduce sums the partial outputs

SiLU(gate) * up is elementwise, so each rank computes its own m/tp columns of the product
from its own shards (Triton kernels or eager alike) and nothing crosses ranks before down.
The token LayerNorm acts on the d-wide embedding before up, so it stays replicated. Each
rank holds and reads 1/tp of the three matrices (about 235 M parameters in all at m = 14336
on an 8B target). As in SGLang's LlamaMLP the layers use the "tp" group, which SGLang's
EAGLE-3 worker points at the draft's own group while it builds and runs the draft.

Checkpoints keep the full tensors under their usual names (`edfuse.gate.weight`, ...): the
layers' own weight loaders take each rank's slice. The layers get no quant_config: EDFuse
weights are stored unquantized, as the plain `nn.Linear` layers had them.

Each reliance on SGLang's layer internals is checked against 0.5.23's source at import
(`patches.guard`), so an upgrade that changes one fails loudly instead of sharding wrongly.
"""

from __future__ import annotations

import torch
from sglang.srt.layers.linear import ColumnParallelLinear, RowParallelLinear
from sglang.srt.runtime_context import get_parallel
from torch import nn

from sglang_edsd.edfuse import EDFuse
from sglang_edsd.patches import guard

# (SGLang code, what it must still contain): the layer returns (output, bias), column layers
# keep their shard (no gather), loaders slice the full tensor by rank, down all-reduces.
_ANCHORS = (
    (ColumnParallelLinear.forward, "output = output_parallel"),
    (ColumnParallelLinear.forward, "return output, output_bias"),
    (ColumnParallelLinear.weight_loader, "start_idx = tp_rank * shard_size"),
    (RowParallelLinear.weight_loader, "start_idx = tp_rank * shard_size"),
    (RowParallelLinear.forward, "output = get_parallel().tp_group.all_reduce(output_parallel)"),
    (RowParallelLinear.forward, "return output, output_bias"),
)
for _target, _anchor in _ANCHORS:
    guard(_target, _anchor, "EDFuse tensor parallelism")


class _ColumnLinear(ColumnParallelLinear):
    """Returns only the output, as `nn.Linear` does (the runner and kernels call gate/up)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


class _RowLinear(RowParallelLinear):
    """Returns only the all-reduced output, as `nn.Linear` does (the join calls down)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


class TPEDFuse(EDFuse):
    """EDFuse whose gate/up are column-parallel and down row-parallel over the expansion width."""

    def projections(self, feature_size: int, hidden_size: int, expansion_size: int) -> tuple[nn.Module, ...]:
        tp_size = get_parallel().tp_size
        if expansion_size % tp_size:
            raise ValueError(
                f"EDFuse expansion size m={expansion_size} is not divisible by the draft's tensor-parallel "
                f"size {tp_size}; gate/up/down are sharded over m, so pick a TP size that divides it"
            )
        return (
            _ColumnLinear(feature_size, expansion_size, bias=False, parallel_group="tp"),
            _ColumnLinear(hidden_size, expansion_size, bias=False, parallel_group="tp"),
            _RowLinear(expansion_size, hidden_size, bias=False, reduce_results=True, parallel_group="tp"),
        )
