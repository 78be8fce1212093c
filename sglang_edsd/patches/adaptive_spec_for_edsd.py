"""Let SGLang's adaptive speculation (`--speculative-adaptive`) run for EDSD as for EAGLE3.

`adaptive_unsupported_reason` refuses every algorithm NAME but EAGLE and EAGLE3, and the server
then logs `speculative_adaptive disabled: speculative_algorithm=EDSD` and drafts at a fixed
depth. EDSD runs SGLang's own single-layer EAGLE V2 worker, which implements the adaptive
controller (per batch-size candidate depths, an EMA of accepted length, per-depth graphs on
GPU), so the refusal is only about the name. The hook runs SGLang's check with the name read as
EAGLE3 and keeps every other condition SGLang checks (topk 1, no attention DP, no multi-layer
EAGLE, no two-batch overlap, no pdmux, the built-in worker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ANCHOR = 'cfg.speculative_algorithm not in ("EAGLE", "EAGLE3")'
TARGET = "sglang.srt.speculative.adaptive_spec_params.adaptive_unsupported_reason"


class _ReadAsEagle3:
    """A resolving view of the server arguments whose algorithm name reads EAGLE3."""

    def __init__(self, view: Any) -> None:
        self._view = view

    def __getattr__(self, name: str) -> Any:
        return "EAGLE3" if name == "speculative_algorithm" else getattr(self._view, name)


def _allow_edsd(original: Callable[[Any], str | None], server_args: Any) -> str | None:
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.speculative import adaptive_spec_params

    if (resolving_view(server_args).speculative_algorithm or "").upper() != "EDSD":
        return original(server_args)
    real_view = adaptive_spec_params.resolving_view
    adaptive_spec_params.resolving_view = lambda sa: _ReadAsEagle3(real_view(sa))
    try:
        return original(server_args)
    finally:
        adaptive_spec_params.resolving_view = real_view


def apply() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType
    from sglang.srt.speculative import adaptive_spec_params

    from sglang_edsd.patches import guard

    guard(adaptive_spec_params.adaptive_unsupported_reason, ANCHOR, __name__)
    guard(adaptive_spec_params.adaptive_unsupported_reason, "cfg = resolving_view(server_args)", __name__)
    HookRegistry.register(TARGET, _allow_edsd, HookType.AROUND)
