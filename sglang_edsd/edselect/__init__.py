"""EDSelect: pick the two target layers whose hidden states feed an EDSD draft.

EDSD paper Sec. 3.2 / App. A.1: score every target layer on a small calibration set with
Curvature (Hosseini & Fedorenko 2023) and LiDAR (Thilak et al. 2024), as applied to LLM
layers by Skean et al. 2025, and take the layer with the highest value of each.

Modules: `metrics` (matrix entropy, curvature, LiDAR and streaming accumulators),
`augment` (deterministic token-level views for LiDAR), `collect` (runs a HF target:
`run_edselect`), `select` (the argmax/tie rule), `result` (JSON and plot), `data`
(calibration JSONL), `command` (`sglang-edsd select`). Nothing here imports sglang.
Layer ids are SGLang's: id i = output of decoder layer i = HF ``hidden_states[i + 1]``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports (PEP 562): `import sglang_edsd.edselect.command` for CLI wiring must not
# pull in torch/transformers before a subcommand actually runs.
_EXPORTS = {
    "run_edselect": "collect",
    "add_select_arguments": "command",
    "run_edselect_from_paths": "command",
    "select_main": "command",
    "write_layers_to_draft": "command",
    "CalibrationData": "data",
    "load_calibration_data": "data",
    "EDSelectError": "errors",
    "EDSelectResult": "result",
    "LayerChoice": "select",
    "eligible_layer_ids": "select",
    "select_layers": "select",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
