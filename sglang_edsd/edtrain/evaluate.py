"""Held-out evaluation of a training run: per-step top-1 agreement on data it did not train on.

Why: the agreement printed during training is measured on the training data, which a small
draft can memorise; acceptance at serving time follows agreement on unseen text. The loss and
agreement are computed exactly as in training (same labels, same TTT unroll; `trainer.agreement`)
with no masking and no gradient, on a capture or online through the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from sglang_edsd.draft_config import EDSDDraftConfig
from sglang_edsd.edtrain.checkpoint import load_checkpoint
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.recipes import TrainConfig, TrainConfigError
from sglang_edsd.edtrain.sources import OnlineData, open_source, resolve_precision
from sglang_edsd.edtrain.target_head import TargetHead
from sglang_edsd.edtrain.trainer import Supervision, agreement


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | OnlineData,
    *,
    steps: int | None = None,
    target_path: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Agreement per TTT step (and the weighted loss) of the run's latest checkpoint on `data`."""
    state = load_checkpoint(Path(run_dir))
    if state is None:
        raise TrainConfigError(f"no checkpoint in run folder {run_dir}")
    cfg = TrainConfig.from_dict(state["config"])
    steps = steps or cfg.s_max
    precision = resolve_precision(cfg.precision, device)
    source, _ = open_source(
        data,
        lambda t, avail: cfg.layer_ids,
        max_length=cfg.max_length,
        device=device,
        precision=precision,
        needed_by=f"run {run_dir}",
    )
    head = TargetHead.load(Path(target_path or source.target_path)).to(device)
    sup = Supervision.build(head, state["draft_to_target"].to(device), source.target.vocab_size)
    model = EDSDTrainDraft(EDSDDraftConfig.from_hf_dict(state["draft_config"], source=f"{run_dir} checkpoint"))
    model.load_state_dict(state["model"])
    model.to(device)
    samples = (source[i] for i in tqdm(range(len(source)), desc="evaluate", unit="sample", disable=not progress))
    data_name = str(data.tokens if isinstance(data, OnlineData) else data)
    return {"run": str(run_dir), "capture": data_name, **agreement(model, samples, cfg, sup, steps, device, precision)}
