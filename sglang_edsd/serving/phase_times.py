"""Opt-in wall time per serving phase (`SGLANG_EDSD_PHASE_TIMES=<file.jsonl>`): where a plain
decode step or a speculative round spends its time on this CPU, measured inside the scheduler.

Each phase is one SGLang function wrapped through HookRegistry (AROUND); nested phases are
counted inside their parents (attention inside a forward, a forward inside a verify), so shares
are read against the top-level unit: a speculative round when the server drafts, else a model
forward. Every `WINDOW` units the process appends one JSON line of mean milliseconds per unit and
calls per unit for every phase, then starts a new window. The timers add a few microseconds per
call; compare configurations with the same setting.
"""

from __future__ import annotations

import json
import os
import pkgutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from sglang_edsd import envs

WINDOW = 100
ROUND = "sglang.srt.speculative.eagle_worker_v2.EAGLEWorkerV2.forward_batch_generation"
FORWARD = "sglang.srt.model_executor.model_runner.ModelRunner.forward"
_AMX = "sglang.srt.layers.attention.intel_amx_backend.IntelAMXAttnBackend"
PHASES: dict[str, str] = {
    "round": ROUND,
    "verify": "sglang.srt.speculative.eagle_worker_v2.EAGLEWorkerV2.verify",
    "draft_steps": "sglang.srt.speculative.eagle_worker_v2.EagleDraftWorker.draft_forward",
    "draft_extend": "sglang.srt.speculative.eagle_worker_v2.EagleDraftWorker._draft_extend_for_decode",
    "forward": FORWARD,
    "attention_decode": f"{_AMX}.forward_decode",
    "attention_extend": f"{_AMX}.forward_extend",
    "linear": "sglang.srt.layers.quantization.unquant.UnquantizedLinearMethod.apply",
    "lm_head": "sglang.srt.layers.logits_processor.LogitsProcessor._compute_lm_head",
    "rmsnorm": "sglang.srt.layers.layernorm.RMSNorm.forward_native",
    "rope": "sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.forward_native",
}


class PhaseClock:
    """Accumulates seconds and calls per phase; writes a window's means when it is full."""

    def __init__(self, path: str, window: int = WINDOW) -> None:
        self.path, self.window = path, window
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def timed(self, phase: str) -> Callable[..., Any]:
        def around(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                self.calls[phase] += 1
                if phase in ("round", "forward"):
                    self._maybe_flush()

        return around

    def _maybe_flush(self) -> None:
        unit = "round" if self.calls["round"] else "forward"
        units = self.calls[unit]
        if units < self.window:
            return
        line = {
            "pid": os.getpid(),
            "unit": unit,
            "units": units,
            "ms_per_unit": {p: round(1e3 * s / units, 3) for p, s in self.seconds.items()},
            "calls_per_unit": {p: round(c / units, 2) for p, c in self.calls.items()},
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.seconds.clear()
        self.calls.clear()


def _resolves(target: str) -> bool:
    """True when `target` names an existing attribute, resolved as HookRegistry resolves it."""
    owner, attr = target.rsplit(".", 1)
    try:
        return hasattr(pkgutil.resolve_name(owner), attr)
    except (ImportError, AttributeError):
        return False


def register_hooks() -> bool:
    """Wrap every phase when SGLANG_EDSD_PHASE_TIMES names a file; False when off."""
    path = envs.PHASE_TIMES.get()
    if not path:
        return False
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    missing = [target for target in PHASES.values() if not _resolves(target)]
    if missing:
        raise RuntimeError(f"SGLANG_EDSD_PHASE_TIMES: these SGLang functions no longer exist: {missing}")
    clock = PhaseClock(path)
    for phase, target in PHASES.items():
        HookRegistry.register(target, clock.timed(phase), HookType.AROUND)
    return True
