"""Export a training run as a draft folder SGLang serves unchanged.

EDSD runs give an `LlamaForCausalLMEDSD` folder (`--speculative-algorithm EDSD`), the
`eagle3` recipe a `LlamaForCausalLMEagle3` folder (`--speculative-algorithm EAGLE3`). The
folder is written by the same writer as every other draft (manifest-checked), then read
back into a fresh training model and compared tensor by tensor. `read_draft` is the way back:
an exported draft as training weights, for a warm-started run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from sglang_edsd.draft_config import EDSDDraftConfig, validate_draft_folder
from sglang_edsd.draft_io import vocab_maps, write_draft
from sglang_edsd.edtrain.checkpoint import load_checkpoint
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.errors import EDSDError

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ExportError(EDSDError):
    """A run folder that cannot be exported; the message says why."""


def export_draft(
    run_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16", target_path: str | Path | None = None
) -> Path:
    """Write config.json + model.safetensors (weights, d2t, t2d) and verify by loading back."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    state = load_checkpoint(Path(run_dir))
    if state is None:
        raise ExportError(f"no checkpoint in run folder {run_dir} (train first: `sglang-edsd train`)")
    config = EDSDDraftConfig.from_hf_dict(state["draft_config"], source=f"{run_dir} checkpoint")
    weights = dict(state["model"])
    tensors = {**weights, **vocab_maps(state["draft_to_target"], config.target.vocab_size)}
    out = write_draft(config, tensors, out_dir, dtype=DTYPES[dtype], target_path=target_path)
    _check_round_trip(config, weights, out, DTYPES[dtype])
    return out


def _check_round_trip(config: EDSDDraftConfig, weights: dict[str, torch.Tensor], out: Path, dtype: torch.dtype) -> None:
    loaded = load_file(str(out / "model.safetensors"))
    fresh = EDSDTrainDraft(config)
    fresh.load_state_dict({k: v.float() for k, v in loaded.items() if k in weights}, strict=True)
    for name, w in fresh.state_dict().items():
        if not torch.equal(w, weights[name].to(dtype).float()):
            raise ExportError(f"exported tensor {name} does not read back as written")


def read_draft(folder: str | Path) -> tuple[EDSDDraftConfig, dict[str, torch.Tensor], torch.Tensor]:
    """(config, float32 training weights, draft-to-target ids) of a draft folder, manifest-checked."""
    config = validate_draft_folder(folder, None)
    tensors = load_file(str(Path(folder) / "model.safetensors"))
    d2t = tensors.pop("d2t").long()
    tensors.pop("t2d")
    draft_to_target = d2t + torch.arange(d2t.numel())
    return config, {k: v.float() for k, v in tensors.items()}, draft_to_target
