"""`sglang-edsd capture`: offline hidden-state capture for draft training.

Wiring for the CLI owner::

    s = sub.add_parser("capture", help="capture target hidden states, entropy and top-1 for draft training")
    add_capture_arguments(s)
    s.set_defaults(func=capture_main)

`capture_main` prints errors as ``error: ...`` and exits with status 2 on bad input.
Layer ids may come from the command line, an EDSelect result or a draft's config.json; all
sources are united, so one capture can feed both the EDSD (2-layer) and EAGLE-3 (3-layer)
recipes from identical data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sglang_edsd.capture.layout import STORAGE_DTYPES, CaptureError


def add_capture_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `capture` options to a (sub)parser."""
    parser.add_argument("--target", required=True, help="target model folder (Hugging Face format)")
    parser.add_argument(
        "--data",
        required=True,
        help="tokenized JSONL: {'id': str, 'input_ids': [int...], 'loss_mask': [0/1...]} per line",
    )
    parser.add_argument("--out", required=True, help="capture folder (manifest.json + shard-*.safetensors)")
    parser.add_argument(
        "--layer-ids",
        type=int,
        nargs="+",
        metavar="ID",
        help="SGLang layer ids to capture (id i = output of decoder layer i = HF hidden_states[i+1])",
    )
    parser.add_argument(
        "--layers-from",
        metavar="PATH",
        help="take layer ids from an EDSelect result (edselect.json or its folder) "
        "or a draft (folder or config.json: eagle_aux_hidden_state_layer_ids)",
    )
    parser.add_argument(
        "--extra-layer-ids", type=int, nargs="+", metavar="ID", default=[], help="more layer ids to add to the union"
    )
    parser.add_argument(
        "--with-eagle3-layers", action="store_true", help="also capture SGLang's default EAGLE-3 ids [1, L//2-1, L-4]"
    )
    parser.add_argument("--max-length", type=int, default=2048, help="truncate each sample to this many tokens")
    parser.add_argument("--shard-tokens", type=int, default=65536, help="close a shard once it holds this many tokens")
    parser.add_argument(
        "--dtype",
        choices=sorted(STORAGE_DTYPES),
        default="bfloat16",
        help="storage dtype of hidden states (entropy is always float32)",
    )
    parser.add_argument(
        "--model-dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="dtype the target runs in (auto: float32 on CPU, bfloat16 on GPU)",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--limit", type=int, help="capture only the first N samples of the file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def layer_ids_from_file(path: str | Path) -> list[int]:
    """Layer ids from an EDSelect result JSON or a draft config.json (or a folder holding either)."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in ("edselect.json", "config.json") if (path / name).is_file()]
        if not found:
            raise CaptureError(f"--layers-from {path}: folder has neither edselect.json nor config.json")
        path = found[0]
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CaptureError(f"--layers-from {path}: cannot read JSON ({e})") from None
    if isinstance(data, dict) and "selected_layer_ids" in data:
        ids = data["selected_layer_ids"]
    elif isinstance(data, dict) and isinstance(data.get("eagle_config"), dict):
        ids = data["eagle_config"].get("eagle_aux_hidden_state_layer_ids")
    else:
        raise CaptureError(
            f"--layers-from {path}: neither an EDSelect result (selected_layer_ids) "
            "nor a draft config (eagle_config.eagle_aux_hidden_state_layer_ids)"
        )
    if not isinstance(ids, list) or not ids or not all(type(i) is int for i in ids):
        raise CaptureError(f"--layers-from {path}: layer ids must be a non-empty list of ints, got {ids!r}")
    return ids


def resolve_layer_ids(args: argparse.Namespace) -> list[int]:
    """--layer-ids as given (duplicates there are an error downstream) plus the other sources, united."""
    from sglang_edsd.draft_config import TargetInfo
    from sglang_edsd.draft_io import eagle3_layer_ids

    ids = list(args.layer_ids or [])
    extra = list(args.extra_layer_ids)
    if args.layers_from:
        extra += layer_ids_from_file(args.layers_from)
    if args.with_eagle3_layers:
        extra += eagle3_layer_ids(TargetInfo.from_path(args.target))
    ids += sorted({i for i in extra if i not in ids})
    if not ids:
        raise CaptureError("no layer ids: give --layer-ids, --layers-from, --extra-layer-ids or --with-eagle3-layers")
    return ids


def capture_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd capture` (arguments from add_capture_arguments)."""
    from sglang_edsd.capture.writer import capture

    ids = resolve_layer_ids(args)
    print(f"capture: SGLang layer ids {sorted(ids)} (HF hidden_states {[i + 1 for i in sorted(ids)]})", file=sys.stderr)
    stats = capture(
        args.target,
        args.data,
        args.out,
        ids,
        max_length=args.max_length,
        shard_tokens=args.shard_tokens,
        dtype=args.dtype,
        device=args.device,
        model_dtype=args.model_dtype,
        limit=args.limit,
        progress=not args.no_progress,
    )
    print(
        f"{stats['out_dir']}: {stats['samples']} samples, {stats['tokens']} tokens in {stats['shards']} shards "
        f"({stats['new_tokens']} new; {stats['tokens_per_s']:.0f} tokens/s over the whole capture)"
    )
    print(stats["report"])
    return 0
