"""CPU-support layer: lets real SGLang serve (speculative decoding included) without a GPU.

PyPI's sgl-kernel is CUDA-only, so SGLang's CPU path lacks the `sgl_kernel.*_cpu` ops its
intel_amx attention backend and speculative helpers call. This layer supplies torch-native
versions (`ops.py`, installed by `install.py`), switches SGLang's CPU engine on and tells
SGLang's platform facts that the intel_amx backend may run (it is the only CPU entry in
SGLang's draft-attention factory).

It activates by itself when torch sees no CUDA device (plugins run before flags are parsed,
so the machine, not `--device`, decides) and never on a GPU machine. Override with
SGLANG_EDSD_CPU_SUPPORT=0/1.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)
_enabled = False


def should_enable() -> bool:
    """True on a machine without CUDA devices, unless SGLANG_EDSD_CPU_SUPPORT says otherwise."""
    forced = os.environ.get("SGLANG_EDSD_CPU_SUPPORT")
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    return not torch.cuda.is_available()


def maybe_enable() -> bool:
    """Enable CPU support in this process if `should_enable()`; returns whether it is on."""
    global _enabled
    if _enabled:
        return True
    if not should_enable():
        return False
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    from sglang.srt.runtime_context import override_platform

    from sglang_edsd.cpu_support.install import install_cpu_ops

    installed = install_cpu_ops()
    if installed:
        # Our ops implement what intel_amx needs; without this SGLang downgrades it.
        override_platform(has_amx=True).install()
    logger.info("sglang-edsd CPU support on: %d sgl_kernel ops installed", len(installed))
    _enabled = True
    return True
