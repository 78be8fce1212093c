"""Allow SGLang's DP spec/prefill coordination for EDSD.

`handle_speculative_decoding` refuses SGLANG_ENABLE_DP_SPEC_PREFILL_COORDINATION=1 unless
the algorithm NAME is EAGLE, EAGLE3 or DSPARK. EDSD runs SGLang's single-layer EAGLE V2
worker, which implements the coordination, so the refusal is only about the name; this
matters for the paper's deployment shape (DP attention, DP=8). The hook runs the original
with the variable masked for EDSD and keeps SGLang's real condition (no multi-layer EAGLE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ANCHOR = 'cfg.speculative_algorithm not in ("EAGLE", "EAGLE3", "DSPARK")'
TARGET = "sglang.srt.arg_groups.speculative_hook.handle_speculative_decoding"


def _allow_edsd(original: Callable[[Any], None], server_args: Any) -> None:
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.environ import envs

    flag = envs.SGLANG_ENABLE_DP_SPEC_PREFILL_COORDINATION
    cfg = resolving_view(server_args)
    if (cfg.speculative_algorithm or "").upper() != "EDSD" or not flag.get():
        return original(server_args)
    if cfg.enable_multi_layer_eagle:
        raise ValueError("DP spec/prefill coordination requires single-layer EAGLE-family drafting")
    with flag.override(False):
        original(server_args)


def apply() -> None:
    from sglang.srt.arg_groups import speculative_hook
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sglang_edsd.patches import guard

    guard(speculative_hook.handle_speculative_decoding, ANCHOR, __name__)
    HookRegistry.register(TARGET, _allow_edsd, HookType.AROUND)
