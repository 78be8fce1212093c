"""SGLang plugin entry point (`sglang.srt.plugins` group): runs in every SGLang process.

SGLang calls `register()` before server arguments are parsed, so everything here keys
off the machine, not the flags. Order matters: the CPU-support layer must set its
environment before SGLang modules that read it are imported by the later steps.
"""

from __future__ import annotations

import logging

from sglang_edsd import envs

logger = logging.getLogger(__name__)


def register() -> None:
    """Enable CPU support if needed, register EDSD and its draft model, register patches (and EASD
    or the entropy trace if configured)."""
    from sglang_edsd import cpu_support

    cpu_support.maybe_enable()

    from sglang_edsd.serving.model_registration import register_draft_model
    from sglang_edsd.serving.spec_algo import register_algorithm

    register_algorithm()
    register_draft_model()

    from sglang_edsd.patches import apply_all

    apply_all()
    from sglang_edsd.serving import phase_times

    if phase_times.register_hooks():
        logger.warning("sglang-edsd: phase timing on, appending to %s", envs.PHASE_TIMES.get())

    from sglang_edsd.easd.rule import EASDConfig

    easd, trace, stop = EASDConfig.from_env(), envs.TRACE.get(), envs.ENTROPY_STOP.get()
    if easd is not None or trace or stop:
        from sglang_edsd.easd.worker import register_hooks

        register_hooks()
    if easd is not None:
        logger.warning("sglang-edsd: EASD verification on (lossy; $SGLANG_EDSD_EASD=%s)", easd)
    if trace:
        logger.warning("sglang-edsd: entropy trace on, appending to %s", trace)
    if stop:
        logger.warning("sglang-edsd: entropy stop on ($SGLANG_EDSD_ENTROPY_STOP=%s)", stop)
