"""Write EDSD draft folders: random-initialised drafts for any Llama/Qwen target, and the
shared writer that the trainer's exporter uses, so every draft on disk passes the same
manifest check SGLang's strict loader applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sglang_edsd.draft_config import (
    DraftConfigError,
    EDSDDraftConfig,
    TargetInfo,
    check_tensor_manifest,
    validate_draft_folder,
)


def parse_expansion(spec: str | int, target: TargetInfo) -> int:
    """'m' (target FFN size, the paper's default), 'd', '5d' or an integer width."""
    named = {"m": target.intermediate_size, "d": target.hidden_size, "5d": 5 * target.hidden_size}
    if isinstance(spec, int):
        return spec
    if spec in named:
        return named[spec]
    if spec.isdigit():
        return int(spec)
    raise DraftConfigError(f"expansion must be one of m, d, 5d or an integer, got {spec!r}")


def default_layer_ids(target: TargetInfo) -> tuple[int, int]:
    """SGLang's EAGLE-3 mid and high capture ids; a placeholder until EDSelect picks layers."""
    L = target.num_hidden_layers
    return (L // 2 - 1, L - 4)


def vocab_maps(draft_to_target: torch.Tensor, target_vocab: int) -> dict[str, torch.Tensor]:
    """`d2t` (target id - draft id, what SGLang reads) and `t2d` (target id is in the draft vocab)."""
    ids = draft_to_target.long()
    if ids.unique().numel() != ids.numel():
        raise DraftConfigError("draft vocabulary maps two draft ids to the same target id")
    if int(ids.min()) < 0 or int(ids.max()) >= target_vocab:
        raise DraftConfigError(f"draft vocabulary holds target ids outside 0..{target_vocab - 1}")
    t2d = torch.zeros(target_vocab, dtype=torch.bool)
    t2d[ids] = True
    return {"d2t": ids - torch.arange(ids.numel()), "t2d": t2d}


def random_draft_tensors(config: EDSDDraftConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Initialise every tensor of the manifest (norms to 1, LayerNorm bias to 0, rest N(0, 0.02))."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in config.expected_tensors().items():
        if name in ("d2t", "t2d", "embed_tokens.weight"):
            continue
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape)
        elif name.endswith("norm.bias"):
            tensors[name] = torch.zeros(shape)
        else:
            tensors[name] = torch.randn(shape, generator=gen) * 0.02
    tensors.update(vocab_maps(torch.arange(config.draft_vocab_size), config.target.vocab_size))
    return tensors


def write_draft(
    config: EDSDDraftConfig,
    tensors: dict[str, torch.Tensor],
    out_dir: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    target_path: str | Path | None = None,
) -> Path:
    """Save config.json + model.safetensors, then load the folder back through the validator."""
    config.validate()
    check_tensor_manifest(config, {k: tuple(v.shape) for k, v in tensors.items()}, "draft to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = config.to_hf_dict()
    hf["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(cast, str(out / "model.safetensors"), metadata={"format": "pt", "edsd_format_version": "1"})
    validate_draft_folder(out, target_path)
    return out


def eagle3_layer_ids(target: TargetInfo) -> tuple[int, int, int]:
    """SGLang's default EAGLE-3 capture ids [1, L//2 - 1, L - 4]."""
    L = target.num_hidden_layers
    return (1, L // 2 - 1, L - 4)


def init_draft(
    target_path: str | Path,
    out_dir: str | Path,
    layer_ids: tuple[int, ...] | None = None,
    expansion: str | int = "m",
    draft_vocab_size: int | None = None,
    seed: int = 0,
    input_module: str = "edfuse",
) -> Path:
    """Make a random-initialised EDSD draft (or, with input_module="fc", an EAGLE-3 draft)."""
    target = TargetInfo.from_path(target_path)
    if not layer_ids:
        layer_ids = default_layer_ids(target) if input_module == "edfuse" else eagle3_layer_ids(target)
    config = EDSDDraftConfig(
        target=target,
        layer_ids=tuple(layer_ids),
        expansion_size=parse_expansion(expansion, target),
        draft_vocab_size=draft_vocab_size or target.vocab_size,
        input_module=input_module,
    )
    return write_draft(config, random_draft_tensors(config, seed), out_dir, target_path=target_path)
