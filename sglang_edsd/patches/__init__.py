"""Named, guarded patches to SGLang 0.5.23 for places that test the algorithm NAME.

Each patch is one module with `ANCHOR` (the SGLang source it was written against, checked
with `guard()` before anything is hooked: a changed SGLang fails loudly instead of being
patched blindly) and `apply()`, which registers hooks through SGLang's `HookRegistry`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from sglang_edsd.patches import adaptive_spec_for_edsd, dp_spec_prefill_coordination

PATCHES = (dp_spec_prefill_coordination, adaptive_spec_for_edsd)


class PatchGuardError(RuntimeError):
    """SGLang's code no longer looks like what a patch was written for."""


def guard(target: Callable, anchor: str, patch: str) -> None:
    """Raise unless `anchor` still appears verbatim in `target`'s source."""
    if anchor not in inspect.getsource(target):
        raise PatchGuardError(
            f"sglang_edsd patch {patch!r}: {target.__module__}.{target.__qualname__} no longer contains "
            f"{anchor!r}; this patch was written for sglang 0.5.23 and must be revisited"
        )


def apply_all() -> None:
    """Guard and register every patch (hooks take effect in HookRegistry.apply_hooks)."""
    for patch in PATCHES:
        patch.apply()
