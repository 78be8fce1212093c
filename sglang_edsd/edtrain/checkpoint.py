"""Run-folder checkpoints: written atomically, complete enough to resume bit-exactly.

A checkpoint holds the trainable weights, the optimizer state, the position in the run
(epoch, sample index within the rank's epoch order), the epoch's running statistics and
the history so far; the data order is a pure function of (seed, epoch, world size), so
nothing else is needed to continue where the run stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sglang_edsd.files import atomic_path

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    path = run_dir / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
