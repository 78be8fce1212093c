"""Where EDTrain's samples come from: an offline capture, or the target run online.

Why online: a capture stores ~3.5 KB per token for SmolLM2 (~24 KB for an 8B target) and
its writer runs the target once anyway; running the target inside the training loop feeds
the draft the same tensors (selected layers, pre-norm final hidden state, full-vocabulary
entropy and top-1, from the one `run_target`) with nothing but checkpoints on disk. Both
sources hand the trainer the sample dict `CaptureReader` defines, so one training step
serves both and their losses are equal on equal features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import torch

from sglang_edsd.capture.layout import CaptureError, check_layer_ids
from sglang_edsd.capture.packed import packed_target_features, use_packed_attention
from sglang_edsd.capture.reader import CaptureReader
from sglang_edsd.capture.writer import load_target_model
from sglang_edsd.data.chat import read_token_dataset
from sglang_edsd.draft_config import TargetInfo
from sglang_edsd.edtrain.recipes import PRECISIONS, TrainConfigError


class SampleSource(Protocol):
    """What the trainer reads: sample lengths up front, one sample's tensors on demand."""

    target: TargetInfo
    target_path: Path
    lengths: list[int]

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    def samples(self, indices: Sequence[int]) -> list[dict[str, Any]]: ...
    def tokens(self, i: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OnlineData:
    """Train online: `tokens` (a `sglang-edsd prepare` JSONL) run through the target at `target`.

    `model`: that target already built (on the training device, in the run's precision)
    instead of loaded from `target`; the scale benchmark builds one with random weights."""

    tokens: Path
    target: Path
    model: torch.nn.Module | None = field(default=None, compare=False, repr=False)


@cache
def cpu_has_bf16() -> bool:
    """avx512_bf16 / amx_bf16: bf16 GEMMs run ~6x float32 here (README, measured)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """`auto` -> bf16 where the hardware has fast bf16 (this CPU's avx512_bf16, CUDA), else fp32."""
    if precision not in PRECISIONS:
        raise TrainConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


class OnlineSource:
    """Token samples whose target features are computed when the trainer asks for them: one
    target forward per packed micro-batch (`capture.packed`), features left on the device."""

    def __init__(
        self,
        data: OnlineData,
        layer_ids: Sequence[int],
        max_length: int,
        device: str,
        precision: str,
        model: torch.nn.Module | None = None,
    ) -> None:
        """`model`: the target already loaded (same folder, device and precision) to share, e.g. by
        the held-out set of a run whose training data is online too."""
        self.target_path = Path(data.target)
        self.target = TargetInfo.from_path(self.target_path)
        self.layer_ids = check_layer_ids(layer_ids, self.target.num_hidden_layers)
        self.sample_ids: list[str] = []
        self._ids: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []
        for s in read_token_dataset(data.tokens):
            ids = torch.tensor(s["input_ids"][:max_length], dtype=torch.int32)
            if int(ids.max()) >= self.target.vocab_size:
                raise CaptureError(
                    f"{data.tokens}: sample {s['id']!r} holds token id {int(ids.max())}, outside the "
                    f"target vocabulary 0..{self.target.vocab_size - 1} (tokenized for another model?)"
                )
            self.sample_ids.append(s["id"])
            self._ids.append(ids)
            self._masks.append(torch.tensor(s["loss_mask"][:max_length], dtype=torch.bool))
        if not self._ids:
            raise CaptureError(f"{data.tokens}: no samples")
        self.lengths = [int(t.shape[0]) for t in self._ids]
        dtype = "bfloat16" if precision == "bf16" else "float32"
        if model is None:
            model = data.model if data.model is not None else load_target_model(self.target_path, device, dtype)
        use_packed_attention(model)
        self.model = model
        self.storage = getattr(torch, dtype)

    def __len__(self) -> int:
        return len(self._ids)

    def tokens(self, i: int) -> dict[str, Any]:
        return {"id": self.sample_ids[i], "input_ids": self._ids[i].long(), "loss_mask": self._masks[i]}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples([i])[0]

    def samples(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Samples `indices` with their features, from one target forward over all of them."""
        feats = packed_target_features(self.model, [self._ids[i] for i in indices], self.layer_ids, self.storage)
        return [
            {
                **self.tokens(i),
                "entropy": f["entropy"],
                "target_top1": f["target_top1"].long(),
                "final_hidden": f["final_hidden"],
                "hidden": {j: f[f"hidden.{j}"] for j in self.layer_ids},
            }
            for i, f in zip(indices, feats)
        ]


def open_source(
    data: str | Path | OnlineData,
    resolve: Any,
    *,
    max_length: int,
    device: str,
    precision: str,
    needed_by: str = "the training recipe",
    share_with: SampleSource | None = None,
) -> tuple[SampleSource, tuple[int, ...]]:
    """The sample source for `data` and the layer ids `needed_by` reads (`resolve(target, available)`).
    An online source reuses the target model `share_with` (another online source) already loaded
    when both name the same target folder."""
    if isinstance(data, OnlineData):
        ids = resolve(TargetInfo.from_path(Path(data.target)), None)
        shared = isinstance(share_with, OnlineSource) and share_with.target_path == Path(data.target)
        model = share_with.model if shared else None
        return OnlineSource(data, ids, max_length, device, precision, model), tuple(ids)
    reader = CaptureReader(data)
    ids = resolve(reader.target, reader.layer_ids)
    reader.require_layers(ids, needed_by)
    return reader, ids
