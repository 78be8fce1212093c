"""Tensor parallelism on CPU: keep SGLang's process groups off NCCL.

Why: SGLang builds every model-parallel group with a PyNccl communicator unless the device
is an NPU or XPU. On a CPU-only torch that fails quietly (no libnccl, the communicator
disables itself), but the CUDA build of torch that `pip install sglang` pulls in ships
libnccl, so on a machine without a GPU the communicator loads it and then dies in
`torch.cuda.device(cpu)`: `--tp 2 --device cpu` never starts. With PyNccl off, a group's
all-reduce of CPU tensors takes SGLang's own fallback, `torch.distributed.all_reduce` on
the group's gloo device group (its shared-memory op needs the CPU build of sgl-kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TARGET = "sglang.srt.distributed.parallel_state.init_model_parallel_group"
ANCHOR = 'use_pynccl = not (_is_npu or _is_xpu or backend == "mooncake")'


def _without_pynccl(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    kwargs["use_pynccl"] = False
    return original(*args, **kwargs)


def register_hooks() -> None:
    """Register the hook with SGLang's HookRegistry (applied by load_plugins)."""
    from sglang.srt.distributed import parallel_state
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sglang_edsd.patches import guard

    guard(parallel_state.init_model_parallel_group, ANCHOR, __name__)
    HookRegistry.register(TARGET, _without_pynccl, HookType.AROUND)
