"""EASD calibration: entropy thresholds as percentiles of what draft and target show on real text.

The seed paper sets its thresholds from entropies measured on a calibration set but does not
publish them, so ours are computed here. Over a capture (target hidden states, entropies and
final states; `sglang-edsd capture`) the served draft is unrolled as in training (step k of
row i proposes token i+2+k), and every answer position gives a pair: the draft's entropy and
top-n there, and the target's entropy and top-n for the same token. The thresholds are the
`percentile`-th percentile of each model's own entropies; the report also gives how often the
full rule (with the top-n overlap) would fire at those thresholds, per draft step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from sglang_edsd.capture.reader import CaptureReader
from sglang_edsd.draft_config import DraftConfigError, validate_draft_folder
from sglang_edsd.easd.rule import EASDConfig, entropy_and_top, fire
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.target_head import TargetHead


def load_draft(draft_path: Path, target_path: Path) -> tuple[EDSDTrainDraft, torch.Tensor]:
    """A served draft folder as the float32 training model, and its draft -> target id map."""
    config = validate_draft_folder(draft_path, target_path)
    tensors = load_file(str(draft_path / "model.safetensors"))
    model = EDSDTrainDraft(config)
    model.load_state_dict({k: tensors[k].float() for k in model.state_dict()}, strict=True)
    if "d2t" not in tensors:
        raise DraftConfigError(f"{draft_path}: model.safetensors has no d2t (draft -> target id map)")
    return model.eval(), tensors["d2t"].long() + torch.arange(tensors["d2t"].numel())


def _pairs(
    model: EDSDTrainDraft, d2t: torch.Tensor, head: TargetHead, sample: dict[str, Any], steps: int, top_n: int
) -> list[dict[str, torch.Tensor]]:
    """Per draft step: (draft entropy, draft top-n, target entropy, target top-n) at answer positions."""
    ids, n = sample["input_ids"], int(sample["input_ids"].shape[0])
    features = torch.cat([sample["hidden"][i] for i in model.config.layer_ids], dim=-1).float()
    target_logits = head.final_norm(sample["final_hidden"]) @ head.lm_head.T  # row j scores token j+1
    mask = sample["loss_mask"].bool()
    out = []
    for k, logits in enumerate(model(features, ids, head.embed, steps)):
        rows = torch.arange(n)
        keep = rows + 2 + k < n
        keep[keep.clone()] &= mask[(rows + 2 + k)[keep]]
        draft_h, draft_top = entropy_and_top(logits[keep], top_n)
        target_h, target_top = entropy_and_top(target_logits[(rows + 1 + k)[keep]], top_n)
        out.append(
            {
                "draft_entropy": draft_h,
                "draft_top": d2t[draft_top],
                "target_entropy": target_h,
                "target_top": target_top,
            }
        )
    return out


def calibrate(
    draft_path: str | Path,
    capture_dir: str | Path,
    *,
    percentile: float = 80.0,
    top_n: int = 5,
    min_overlap: float = 0.6,
    steps: int = 4,
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Thresholds at `percentile` and the rule's firing rate per draft step on the capture."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    reader = CaptureReader(capture_dir)
    target_path = Path(reader.manifest["target_path"])
    model, d2t = load_draft(Path(draft_path), target_path)
    reader.require_layers(model.config.layer_ids, f"draft {draft_path}")
    head = TargetHead.load(target_path)
    per_step: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(steps)]
    count = len(reader) if max_samples is None else min(max_samples, len(reader))
    with torch.no_grad():
        for i in tqdm(range(count), desc="easd calibrate", unit="sample", disable=not progress):
            for k, pair in enumerate(_pairs(model, d2t, head, reader[i], steps, top_n)):
                per_step[k].append(pair)
    joined = [{key: torch.cat([p[key] for p in step]) for key in step[0]} for step in per_step]
    q = percentile / 100.0
    cfg = EASDConfig(
        draft_entropy=float(torch.cat([j["draft_entropy"] for j in joined]).quantile(q)),
        target_entropy=float(torch.cat([j["target_entropy"] for j in joined]).quantile(q)),
        top_n=top_n,
        min_overlap=min_overlap,
    )
    fires = [fire(cfg, j["draft_entropy"], j["draft_top"], j["target_entropy"], j["target_top"]) for j in joined]
    return {
        "draft": str(draft_path),
        "capture": str(capture_dir),
        "samples": count,
        "percentile": percentile,
        "config": cfg.__dict__,
        "positions_per_step": [int(f.numel()) for f in fires],
        "fire_rate_per_step": [float(f.float().mean()) if f.numel() else 0.0 for f in fires],
    }
