"""Run-folder checkpoints: written atomically, complete enough to resume bit-exactly.

A checkpoint holds the trainable weights, the optimizer state, the position in the run
(epoch, sample index within the rank's epoch order), the epoch's running statistics and
the history so far; the data order is a pure function of (seed, epoch, world size), so
nothing else is needed to continue where the run stopped. Writes run in the background
(`CheckpointWriter`) from a host copy taken at the step boundary, so what is written is
exactly the state at that boundary.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import torch

from sglang_edsd.errors import EDSDError
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


def host_copy(obj: Any) -> Any:
    """A copy of `obj` that shares no tensor or container with it: tensors cloned to the host."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return copy.deepcopy(obj)


class CheckpointWriter:
    """Writes a run's checkpoints on a background thread, so the loop waits for a host copy of
    its state, not for the disk (at 8B shape a checkpoint holds ~7 GB of weights and AdamW
    moments). One write at a time: `save` first waits for the previous one. `wait` re-raises a
    failed write; a run calls it before it returns, so a returned run has its checkpoint on disk.
    `blocking_seconds` is the time the loop spent in `save` (copy + waiting for the disk)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.count = 0
        self.blocking_seconds = 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any]) -> None:
        start = time.perf_counter()
        host = host_copy(state)
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(host,), name="edtrain-checkpoint")
        self._thread.start()
        self.count += 1
        self.blocking_seconds += time.perf_counter() - start

    def _write(self, state: dict[str, Any]) -> None:
        try:
            save_checkpoint(self.run_dir, state)
        except BaseException as e:  # handed to the training thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointWriteError(f"writing {self.run_dir / CHECKPOINT} failed: {error}") from error


class CheckpointWriteError(EDSDError):
    """A background checkpoint write failed; the message names the file and the cause."""
