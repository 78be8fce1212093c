"""Helpers several test modules share (edit a draft folder in place, chat prompts as token ids)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file


def edit_config(draft: Path, edit) -> None:
    cfg = json.loads((draft / "config.json").read_text())
    edit(cfg)
    (draft / "config.json").write_text(json.dumps(cfg))


def edit_weights(draft: Path, edit) -> None:
    tensors = load_file(str(draft / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(draft / "model.safetensors"))


def chat_ids(model: Path, prompt: str) -> list[int]:
    """`prompt` as one user turn through the model's chat template, as token ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]
