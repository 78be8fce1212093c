"""CPU-support layer: lets real SGLang serve (speculative decoding included) without a GPU.

PyPI's sgl-kernel is CUDA-only, so SGLang's CPU path lacks the `sgl_kernel.*_cpu` ops its
intel_amx attention backend and speculative helpers call. This layer supplies torch-native
versions (`ops.py`, installed by `install.py`), switches SGLang's CPU engine on and tells
SGLang's platform facts that the intel_amx backend may run (it is the only CPU entry in
SGLang's draft-attention factory), routes few-row float32 GEMMs (`gemm.py`), the shape of
a verify pass, through a faster call, and keeps tensor-parallel groups on gloo (`distributed.py`).

It activates by itself when torch sees no CUDA device (plugins run before flags are parsed,
so the machine, not `--device`, decides) and never on a GPU machine. Override with
SGLANG_EDSD_CPU_SUPPORT=0/1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from sglang_edsd import envs

logger = logging.getLogger(__name__)
_enabled = False


def should_enable() -> bool:
    """True on a machine without CUDA devices, unless SGLANG_EDSD_CPU_SUPPORT says otherwise."""
    forced = envs.CPU_SUPPORT.get() or None
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    return not torch.cuda.is_available()


def _reach_child_processes() -> None:
    """Put `child_path/` first on sys.path (spawn copies it) and PYTHONPATH (subprocesses).

    SGLang's spawned scheduler imports `from sgl_kernel import ..._cpu` before it loads
    plugins; `child_path/sgl_kernel` answers that import with our ops (see its docstring).
    """
    child_path = str(Path(__file__).parent / "child_path")
    if child_path not in sys.path:
        sys.path.insert(0, child_path)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if child_path not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([child_path, *parts])


def maybe_enable() -> bool:
    """Enable CPU support in this process if `should_enable()`; returns whether it is on."""
    global _enabled
    if _enabled:
        return True
    if not should_enable():
        return False
    os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    _reach_child_processes()
    from sglang_edsd.cpu_support.install import OP_NAMES, install_cpu_ops

    install_cpu_ops()
    from sglang.srt.runtime_context import override_platform
    from sglang.srt.utils.common import cpu_has_amx_support

    if not cpu_has_amx_support():
        # Our ops implement what intel_amx needs; without this SGLang downgrades it.
        override_platform(has_amx=True).install()
    from sglang_edsd.cpu_support import distributed, gemm

    distributed.register_hooks()
    gemm_route = gemm.register_hooks()
    # In spawned children `child_path/sgl_kernel` may already have installed the ops, so
    # report what is reachable rather than what this call registered.
    logger.info(
        "sglang-edsd CPU support on: %d torch-native sgl_kernel CPU ops, few-row GEMM route %s",
        len(OP_NAMES),
        "on" if gemm_route else "off",
    )
    _enabled = True
    return True
