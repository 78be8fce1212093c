"""Offline capture of target features for EDSD / EAGLE-3 draft training (SpecForge-style).

Training a draft offline needs, per token, what the draft sees at serving time (the selected
target layers) and what it is trained to match (the target distribution). Storing that
distribution costs 16-64 KB per token, so we store the target's PRE-norm final hidden state
instead and the trainer rebuilds logits through the frozen target norm + lm_head; the
full-vocabulary entropy (EDTrain's masking signal) and top-1 id come precomputed.

Layout of a capture folder:

* ``manifest.json``: format_version 1, target (TargetInfo fields), target_path, layer_ids
  (SGLang ids, ascending: id i = output of decoder layer i = HF ``hidden_states[i + 1]``),
  hidden_size, storage_dtype, max_length, tokens_file, tokens_sha256, num_samples,
  num_tokens, seconds, shards [{file, num_samples, num_tokens, sample_ids, sample_lengths}],
  complete.
* ``shard-NNNNN.safetensors``: its samples concatenated along tokens (N rows):
  ``input_ids`` int32 (N,), ``loss_mask`` uint8 (N,), ``entropy`` float32 (N,) in nats,
  ``target_top1`` int32 (N,), ``offsets`` int64 (num_samples + 1,), ``final_hidden`` (N, d)
  and ``hidden.<id>`` (N, d) per layer id, both in the storage dtype.

Shards and the manifest are replaced atomically, so an interrupted capture resumes where
its last shard ended. Nothing here imports sglang. Modules: `layout` (schema, bytes per
token), `writer` (`capture`), `reader` (`CaptureReader`), `command` (`sglang-edsd capture`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports (PEP 562): wiring the CLI must not import torch/transformers.
_EXPORTS = {
    "CaptureError": "layout",
    "bytes_per_token": "layout",
    "format_report": "layout",
    "capture": "writer",
    "run_target": "writer",
    "CaptureReader": "reader",
    "add_capture_arguments": "command",
    "capture_main": "command",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
