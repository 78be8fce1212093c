"""`sglang-edsd select`: EDSelect from a target folder and a calibration file.

Wiring for the CLI owner::

    s = sub.add_parser("select", help="EDSelect: pick the two target layers an EDSD draft reads")
    add_select_arguments(s)
    s.set_defaults(func=select_main)

`select_main` prints errors as ``error: ...`` and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from sglang_edsd.edselect.errors import EDSelectError
from sglang_edsd.edselect.result import EDSelectResult
from sglang_edsd.files import write_text_atomic
from sglang_edsd.hf_load import load_causal_lm, load_tokenizer

RESULT_JSON = "edselect.json"
RESULT_PNG = "edselect.png"
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_select_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `select` options to a (sub)parser."""
    parser.add_argument("--target", required=True, help="target model folder (Hugging Face format)")
    parser.add_argument(
        "--data",
        required=True,
        help="calibration JSONL: {'text': ...} or chat {'messages'|'conversations': [...]} records",
    )
    parser.add_argument("--num-samples", type=int, default=128, help="calibration records to draw (paper: 128)")
    parser.add_argument("--out", required=True, help=f"output folder for {RESULT_JSON} and {RESULT_PNG}")
    parser.add_argument(
        "--write-draft-config",
        metavar="DRAFT_DIR",
        help="also set eagle_config.eagle_aux_hidden_state_layer_ids in this EDSD draft's config.json",
    )
    parser.add_argument("--max-len", type=int, default=512, help="truncate each prompt to this many tokens")
    parser.add_argument(
        "--num-views",
        type=int,
        default=8,
        help="views per prompt for LiDAR: the prompt plus N-1 token-augmented copies",
    )
    parser.add_argument(
        "--aug-prob",
        type=float,
        default=0.1,
        help="per-token augmentation probability (half dropout, half random replacement)",
    )
    parser.add_argument(
        "--lidar-delta", type=float, default=1e-4, help="LiDAR regulariser, relative to the mean within-class variance"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for record sampling and augmentation")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", choices=_DTYPES, default="auto", help="model dtype (auto: bfloat16 on GPU, float32 on CPU)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _resolve_device_dtype(device: str | None, dtype: str) -> tuple[str, Any]:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype not in _DTYPES:
        raise EDSelectError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return device, (torch.float32 if device == "cpu" else torch.bfloat16)
    return device, getattr(torch, dtype)


def run_edselect_from_paths(
    target: str | Path,
    data: str | Path,
    out_dir: str | Path | None = None,
    num_samples: int = 128,
    *,
    max_len: int = 512,
    num_views: int = 8,
    seed: int = 0,
    device: str | None = None,
    dtype: str = "auto",
    aug_prob: float = 0.1,
    lidar_delta: float = 1e-4,
    progress: bool = True,
) -> EDSelectResult:
    """Load a HF target and a calibration file, run EDSelect, optionally write JSON + PNG to out_dir."""
    from sglang_edsd.edselect.collect import run_edselect
    from sglang_edsd.edselect.data import load_calibration_data

    target = Path(target)
    tokenizer = load_tokenizer(target, EDSelectError)
    calib = load_calibration_data(data, tokenizer, num_samples=num_samples, seed=seed)  # fail before the model load
    if progress:
        print(
            f"EDSelect: {len(calib.texts)} of {calib.num_records} records from {calib.path}"
            + (f" (fewer than the {num_samples} requested)" if len(calib.texts) < num_samples else ""),
            file=sys.stderr,
        )
    device, torch_dtype = _resolve_device_dtype(device, dtype)
    model = load_causal_lm(target, torch_dtype, EDSelectError).to(device)
    result = run_edselect(
        model,
        tokenizer,
        calib.texts,
        max_len=max_len,
        num_views=num_views,
        seed=seed,
        device=device,
        aug_prob=aug_prob,
        lidar_delta=lidar_delta,
        progress=progress,
    )
    result.settings.update({"target": str(target), "data": str(calib.path), "num_records": calib.num_records})
    if out_dir is not None:
        out = Path(out_dir)
        result.to_json(out / RESULT_JSON)
        result.plot(out / RESULT_PNG, title=target.name)
    return result


def _load_draft_for(draft_dir: Path, target: str | Path, num_layers: int) -> Any:
    """The draft's EDSDDraftConfig, checked against the target and the number of layers to write."""
    from sglang_edsd.draft_config import EDSDDraftConfig, TargetInfo

    config = EDSDDraftConfig.from_path(draft_dir)
    config.check_target(TargetInfo.from_path(target))
    if len(config.layer_ids) != num_layers:
        raise EDSelectError(
            f"draft {draft_dir} reads {len(config.layer_ids)} layers (input_module={config.input_module!r}); "
            f"EDSelect picks {num_layers}. Use an EDSD (edfuse) draft."
        )
    return config


def write_layers_to_draft(draft_dir: str | Path, target: str | Path, layer_ids: tuple[int, int]) -> tuple[int, ...]:
    """Set the draft's eagle_aux_hidden_state_layer_ids; returns the previous ids.

    The draft must be an EDSD (two-layer) draft built for this target; the new config is
    validated through EDSDDraftConfig before config.json is replaced (other fields kept).
    """
    from sglang_edsd.draft_config import EDSDDraftConfig

    draft_dir = Path(draft_dir)
    config = _load_draft_for(draft_dir, target, len(layer_ids))
    replace(config, layer_ids=tuple(int(i) for i in layer_ids)).validate()
    path = draft_dir / "config.json"
    raw = json.loads(path.read_text())
    raw.setdefault("eagle_config", {})["eagle_aux_hidden_state_layer_ids"] = [int(i) for i in layer_ids]
    EDSDDraftConfig.from_hf_dict(raw, source=str(path))  # the file we write must load
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    return config.layer_ids


def select_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd select` (arguments from add_select_arguments)."""

    if args.write_draft_config:  # check the draft before spending time on the target
        _load_draft_for(Path(args.write_draft_config), args.target, 2)
    result = run_edselect_from_paths(
        args.target,
        args.data,
        args.out,
        args.num_samples,
        max_len=args.max_len,
        num_views=args.num_views,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        aug_prob=args.aug_prob,
        lidar_delta=args.lidar_delta,
        progress=not args.no_progress,
    )
    print(result.summary())
    print(f"wrote {Path(args.out) / RESULT_JSON} and {Path(args.out) / RESULT_PNG}")
    if args.write_draft_config:
        old = write_layers_to_draft(args.write_draft_config, args.target, result.selected_layer_ids)
        new = list(result.selected_layer_ids)
        print(
            f"updated {Path(args.write_draft_config) / 'config.json'}: eagle_aux_hidden_state_layer_ids "
            f"{list(old)} -> {new} (HF hidden_states {[i + 1 for i in new]})"
        )
        if list(old) != new:
            print(
                "note: the draft's existing weights were made for the previous layers; (re)train it before serving",
                file=sys.stderr,
            )
    return 0
