"""Opt-in records of every EDSD draft forward: inputs and outputs, one file per call.

Why: the parity test replays them through the training model (same weights, same inputs ->
same logits), and analyses of draft behaviour need per-position data the server does not
expose. Off unless `SGLANG_EDSD_RECORD_DIR` is set in the server's environment; when off
the draft forward pays one `is None` check. Forwards inside CUDA-graph capture are not
recorded (replays never reach Python): serve with `--disable-cuda-graph` for full records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sglang_edsd import envs

ENV_DIR = envs.RECORD_DIR.name


class DraftRecorder:
    """Writes `<dir>/<pid>-<n>.pt` dicts: mode, input_ids, positions, hidden_in, logits, hidden_out."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.count = 0
        directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls) -> DraftRecorder | None:
        where = envs.RECORD_DIR.get()
        return cls(Path(where), int(envs.RECORD_LIMIT.get())) if where else None

    def record(
        self, mode: str, input_ids: torch.Tensor, positions: torch.Tensor, hidden_in: torch.Tensor, output: Any
    ) -> None:
        if self.count >= self.limit or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
            return
        item = {
            "mode": mode,
            "input_ids": input_ids.detach().cpu(),
            "positions": positions.detach().cpu(),
            "hidden_in": hidden_in.detach().float().cpu(),
            "logits": output.next_token_logits.detach().float().cpu(),
            "hidden_out": None if output.hidden_states is None else output.hidden_states.detach().float().cpu(),
        }
        torch.save(item, self.directory / f"{os.getpid()}-{self.count:06d}.pt")
        self.count += 1
