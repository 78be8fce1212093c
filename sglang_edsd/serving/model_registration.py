"""Make SGLang's model registry resolve the EDSD draft architecture."""

from __future__ import annotations

from sglang_edsd.draft_config import EDSD_ARCHITECTURE


def register_draft_model() -> None:
    """Add `LlamaForCausalLMEDSD` to SGLang's ModelRegistry (idempotent)."""
    from sglang.srt.models.registry import ModelRegistry

    from sglang_edsd.serving.draft_model import LlamaForCausalLMEDSD

    ModelRegistry.models.setdefault(EDSD_ARCHITECTURE, LlamaForCausalLMEDSD)
