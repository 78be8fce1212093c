"""The frozen parts of the target a draft trains against, read straight from its safetensors.

The draft shares the target's token embedding (SGLang hands it over at load time, so it is
not exported), and the target distribution is rebuilt from the captured pre-norm final
hidden state through the target's own final RMSNorm and lm_head (SpecForge's offline
recipe): only these three tensors are loaded, never the whole target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from sglang_edsd.draft_config import TargetInfo
from sglang_edsd.edtrain.model import rms_norm
from sglang_edsd.errors import EDSDError

EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"


class TargetHeadError(EDSDError):
    """The target folder lacks a tensor the trainer needs; the message names it."""


def _tensor_files(target_path: Path) -> dict[str, Path]:
    index = target_path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: target_path / file for name, file in weight_map.items()}
    files = sorted(target_path.glob("*.safetensors"))
    if not files:
        raise TargetHeadError(f"no *.safetensors weights in target folder {target_path}")
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            where.update(dict.fromkeys(sf.keys(), f))
    return where


def _load(where: dict[str, Path], name: str, source: Path) -> torch.Tensor:
    if name not in where:
        raise TargetHeadError(f"target {source} has no tensor {name!r}")
    with safe_open(str(where[name]), framework="pt") as sf:
        return sf.get_tensor(name)


@dataclass
class TargetHead:
    """Target embedding, final norm and lm_head, frozen, in float32."""

    embed: torch.Tensor  # (V, d)
    norm_weight: torch.Tensor  # (d,)
    lm_head: torch.Tensor  # (V, d)
    eps: float

    @classmethod
    def load(cls, target_path: str | Path) -> TargetHead:
        path = Path(target_path)
        info = TargetInfo.from_path(path)
        where = _tensor_files(path)
        embed = _load(where, EMBED, path).float()
        head = _load(where, LM_HEAD, path).float() if LM_HEAD in where else embed  # tied embeddings
        if embed.shape != (info.vocab_size, info.hidden_size) or head.shape != embed.shape:
            raise TargetHeadError(
                f"target {path}: embedding {tuple(embed.shape)} / lm_head {tuple(head.shape)} do not match "
                f"vocab_size={info.vocab_size}, hidden_size={info.hidden_size} in its config"
            )
        return cls(embed, _load(where, NORM, path).float(), head, info.rms_norm_eps)

    def to(self, device: torch.device | str) -> TargetHead:
        return TargetHead(self.embed.to(device), self.norm_weight.to(device), self.lm_head.to(device), self.eps)

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden.float(), self.norm_weight, self.eps)

    def restricted(self, draft_to_target: torch.Tensor) -> torch.Tensor:
        """lm_head rows of the draft vocabulary: the soft labels' support (and the draft's init)."""
        return self.lm_head[draft_to_target]


def load_target_layer(target_path: str | Path, index: int) -> dict[str, torch.Tensor]:
    """Decoder layer `index`'s weights (names relative to the layer, float32): a draft init."""
    path = Path(target_path)
    info = TargetInfo.from_path(path)
    if not 0 <= index < info.num_hidden_layers:
        raise TargetHeadError(f"target {path} has decoder layers 0..{info.num_hidden_layers - 1}, not {index}")
    prefix = f"model.layers.{index}."
    where = _tensor_files(path)
    return {name[len(prefix) :]: _load(where, name, path).float() for name in where if name.startswith(prefix)}
