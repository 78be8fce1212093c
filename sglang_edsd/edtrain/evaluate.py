"""Held-out evaluation of a training run: per-step top-1 agreement on a capture it did not train on.

Why: the agreement printed during training is measured on the training data, which a small
draft can memorise; acceptance at serving time follows agreement on unseen text. The loss and
agreement are computed exactly as in training (same labels, same TTT unroll) with no masking
and no gradient. `tau_proxy` = 1 + a1 + a1*a2 + ... (a chain accepts step k only after
steps 1..k-1), a quick stand-in for the served accept length of a depth-n chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sglang_edsd.capture.reader import CaptureReader
from sglang_edsd.draft_config import EDSDDraftConfig
from sglang_edsd.edtrain.checkpoint import load_checkpoint
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.recipes import TrainConfig, TrainConfigError
from sglang_edsd.edtrain.target_head import TargetHead
from sglang_edsd.edtrain.trainer import Supervision, add_step_stats, new_stats, sample_loss


def evaluate_run(run_dir: str | Path, capture_dir: str | Path, *, steps: int | None = None,
                 target_path: str | Path | None = None, device: str = "cpu",
                 progress: bool = True) -> dict[str, Any]:
    """Agreement per TTT step (and the weighted loss) of the run's latest checkpoint on `capture_dir`."""
    state = load_checkpoint(Path(run_dir))
    if state is None:
        raise TrainConfigError(f"no checkpoint in run folder {run_dir}")
    cfg = TrainConfig.from_dict(state["config"])
    steps = steps or cfg.s_max
    reader = CaptureReader(capture_dir)
    reader.require_layers(cfg.layer_ids, f"run {run_dir}")
    head = TargetHead.load(Path(target_path or reader.manifest["target_path"])).to(device)
    sup = Supervision.build(head, state["draft_to_target"].to(device), reader.target.vocab_size)
    model = EDSDTrainDraft(EDSDDraftConfig.from_hf_dict(state["draft_config"], source=f"{run_dir} checkpoint"))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    stats = new_stats(steps)
    with torch.no_grad():
        for i in tqdm(range(len(reader)), desc="evaluate", unit="sample", disable=not progress):
            add_step_stats(stats, sample_loss(model, reader[i], cfg, sup, 0.0, steps, device)[1])
    agreement = [c / max(s, 1) for c, s in zip(stats["correct"], stats["scored"])]
    tau_proxy, chain = 1.0, 1.0
    for a in agreement:
        chain *= a
        tau_proxy += chain
    return {"run": str(run_dir), "capture": str(capture_dir), "samples": len(reader), "steps": steps,
            "agreement_per_step": agreement,
            "loss_per_step": [s / max(t, 1) for s, t in zip(stats["loss_sum"], stats["trained"])],
            "scored_per_step": stats["scored"], "tau_proxy": tau_proxy}
