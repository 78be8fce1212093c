"""Load a Hugging Face target's tokenizer or model, or raise the caller's input error.

Why one place: every toolkit command reads a target folder, and a missing folder or a load
failure must read the same way everywhere, as the command's own error class (exit 2, no
traceback) rather than a transformers stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sglang_edsd.errors import EDSDError


def _check_folder(target: str | Path, error: type[EDSDError]) -> Path:
    path = Path(target)
    if not (path / "config.json").is_file():
        raise error(f"target model folder not found or has no config.json: {target}")
    return path


def load_tokenizer(target: str | Path, error: type[EDSDError] = EDSDError) -> Any:
    path = _check_folder(target, error)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # transformers raises many types for a bad folder
        raise error(f"cannot load the tokenizer of {target}: {e}") from None


def load_causal_lm(target: str | Path, dtype: Any, error: type[EDSDError] = EDSDError, **kwargs: Any) -> Any:
    """`AutoModelForCausalLM` in `dtype`, in eval mode, on the CPU."""
    path = _check_folder(target, error)
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).eval()
    except Exception as e:
        raise error(f"cannot load the target model from {target}: {e}") from None
