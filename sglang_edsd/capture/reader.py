"""Random access to a capture folder, one sample at a time, with bounded memory.

Sample boundaries come from the manifest (`sample_lengths`), so `len()`, `.lengths` and
`.sample_ids` read no tensor data; `__getitem__` slices only its rows out of one shard
through safetensors' lazy `get_slice`, keeping a single shard open.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from sglang_edsd.capture.layout import MANIFEST_NAME, CaptureError, load_manifest
from sglang_edsd.draft_config import TargetInfo


class CaptureReader:
    """Samples of a capture: input ids, loss mask, entropy, top-1, final and selected layer states."""

    def __init__(self, out_dir: str | Path, layers: Sequence[int] | None = None, *, allow_partial: bool = False):
        self.out_dir = Path(out_dir)
        manifest = load_manifest(self.out_dir)
        if manifest is None:
            raise CaptureError(f"no capture in {self.out_dir}: {MANIFEST_NAME} is missing")
        if not manifest["complete"] and not allow_partial:
            raise CaptureError(
                f"{self.out_dir / MANIFEST_NAME}: capture is incomplete ({manifest['num_samples']} samples so far); "
                "re-run the capture command to finish it, or pass allow_partial=True to inspect it"
            )
        self.manifest: dict[str, Any] = manifest
        self.target = TargetInfo(**manifest["target"])
        self.hidden_size: int = manifest["hidden_size"]
        self.layer_ids: list[int] = manifest["layer_ids"]
        if layers is not None:
            self.require_layers(layers, "the layers asked of this reader")
            self.layer_ids = sorted({int(i) for i in layers})
        shards = manifest["shards"]
        self.sample_ids: list[str] = [sid for s in shards for sid in s["sample_ids"]]
        self.lengths: list[int] = [n for s in shards for n in s["sample_lengths"]]
        self._first = [0, *accumulate(s["num_samples"] for s in shards)]  # first sample index of each shard
        self._starts = [0, *accumulate(self.lengths)]  # global token offsets; a shard's rows start at its first
        self._open: tuple[int, Any] | None = None

    @property
    def target_path(self) -> Path:
        return Path(self.manifest["target_path"])

    def require_layers(self, ids: Sequence[int], reader: str) -> None:
        """Fail, naming who needs them, when any of `ids` is not in this capture."""
        missing = sorted({int(i) for i in ids} - set(self.layer_ids))
        if missing:
            raise CaptureError(
                f"layer ids {missing} were not captured in {self.out_dir} (captured: "
                f"{self.layer_ids}), needed by {reader}: capture them with `sglang-edsd capture`"
            )

    def __len__(self) -> int:
        return len(self.lengths)

    def _shard(self, k: int) -> Any:
        if self._open is None or self._open[0] != k:
            path = self.out_dir / self.manifest["shards"][k]["file"]
            try:
                self._open = (k, safe_open(str(path), framework="pt"))
            except Exception as e:
                raise CaptureError(f"cannot open shard {path}: {e}") from None
        return self._open[1]

    def _rows(self, i: int) -> tuple[int, Callable[[str], torch.Tensor]]:
        """(normalised index, a reader of that sample's rows of a named shard tensor)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for a capture of {n} samples")
        i %= n
        k = bisect_right(self._first, i) - 1
        base = self._starts[self._first[k]]
        a, b = self._starts[i] - base, self._starts[i + 1] - base
        f = self._shard(k)
        return i, lambda name: f.get_slice(name)[a:b]

    def tokens(self, i: int) -> dict[str, Any]:
        """Only sample i's `id`, `input_ids` and `loss_mask` (no hidden states read)."""
        i, rows = self._rows(i)
        return {"id": self.sample_ids[i], "input_ids": rows("input_ids").long(), "loss_mask": rows("loss_mask").bool()}

    def samples(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Several samples, one at a time (the trainer's micro-batch read)."""
        return [self[i] for i in indices]

    def __getitem__(self, i: int) -> dict[str, Any]:
        i, rows = self._rows(i)
        return {
            "id": self.sample_ids[i],
            "input_ids": rows("input_ids").long(),
            "loss_mask": rows("loss_mask").bool(),
            "entropy": rows("entropy"),
            "target_top1": rows("target_top1").long(),
            "final_hidden": rows("final_hidden"),
            "hidden": {j: rows(f"hidden.{j}") for j in self.layer_ids},
        }

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for DataLoader workers: the open shard handle is not carried over."""
        return {**self.__dict__, "_open": None}
