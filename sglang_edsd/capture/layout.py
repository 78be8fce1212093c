"""The capture's on-disk contract: manifest schema, resume compatibility, bytes per token.

Kept free of torch so the CLI, the reader and the trainer can check a capture folder (and
print the storage report) without importing the model stack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sglang_edsd.errors import EDSDError
from sglang_edsd.files import write_text_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
STORAGE_DTYPES = {"bfloat16": 2, "float32": 4}  # hidden-state storage dtype -> bytes per element
# Per-token scalars, identical in every layout: input id (int32), loss mask (uint8),
# entropy (float32), target top-1 (int32).
SCALAR_BYTES = 4 + 1 + 4 + 4
EAGLE3_NUM_LAYERS = 3
# Fields that must agree before a run may append to an existing capture.
RESUME_FIELDS = ("target", "target_path", "layer_ids", "storage_dtype", "max_length", "tokens_sha256")


class CaptureError(EDSDError):
    """Bad capture input or a capture folder that cannot be used; the message names the file/field."""


def shard_file(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def check_layer_ids(layer_ids: Sequence[int], num_hidden_layers: int) -> list[int]:
    """SGLang ids (id i = output of decoder layer i), sorted; valid 0..L-2, no duplicates."""
    ids = [int(i) for i in layer_ids]
    L = num_hidden_layers
    if not ids:
        raise CaptureError("layer_ids is empty: name at least one SGLang layer id to capture")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CaptureError(f"layer_ids has duplicates {dupes}: {ids}")
    for i in ids:
        if not 0 <= i <= L - 2:
            raise CaptureError(
                f"layer id {i} is out of range for a target with L={L} decoder layers "
                f"(valid SGLang ids: 0..{L - 2}; id i = output of decoder layer i = HF hidden_states[i + 1])"
            )
    return sorted(ids)


def new_manifest(
    target: dict[str, Any],
    target_path: Path,
    layer_ids: list[int],
    storage_dtype: str,
    max_length: int,
    tokens_file: Path,
    tokens_sha256: str,
) -> dict[str, Any]:
    """An empty, incomplete manifest describing what this run will capture."""
    return {
        "format_version": FORMAT_VERSION,
        "target": target,
        "target_path": str(target_path.resolve()),
        "layer_ids": layer_ids,
        "hidden_size": int(target["hidden_size"]),
        "storage_dtype": storage_dtype,
        "max_length": max_length,
        "tokens_file": str(tokens_file.resolve()),
        "tokens_sha256": tokens_sha256,
        "num_samples": 0,
        "num_tokens": 0,
        "seconds": 0.0,  # capture time summed over runs, for tokens/s of a resumed capture
        "shards": [],  # {"file", "num_samples", "num_tokens", "sample_ids", "sample_lengths"}
        "complete": False,
    }


def load_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of out_dir, or None if there is none yet."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CaptureError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CaptureError(f"{path}: not a capture manifest of format_version {FORMAT_VERSION}")
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomic: a crash leaves the previous manifest, never a torn one."""
    write_text_atomic(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def check_resumable(existing: dict[str, Any], wanted: dict[str, Any], out_dir: Path) -> None:
    """Refuse to append to a capture made with other settings (never mix data silently)."""
    for key in RESUME_FIELDS:
        if existing.get(key) != wanted[key]:
            what = (
                f"tokens file content (sha256; captured from {existing.get('tokens_file')})"
                if key == "tokens_sha256"
                else key
            )
            raise CaptureError(
                f"{out_dir / MANIFEST_NAME} was captured with a different {what}: "
                f"{existing.get(key)!r} there, {wanted[key]!r} now. Use another output folder, "
                "or delete this one to start over."
            )


def bytes_per_token(hidden_size: int, num_layers: int, storage_dtype: str) -> int:
    """Bytes per captured token: `num_layers` aux layers + the final hidden state + scalars."""
    if storage_dtype not in STORAGE_DTYPES:
        raise CaptureError(f"storage dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    return (num_layers + 1) * hidden_size * STORAGE_DTYPES[storage_dtype] + SCALAR_BYTES


def format_report(
    hidden_size: int, layer_ids: Sequence[int], storage_dtype: str, disk_bytes_per_token: float | None = None
) -> str:
    """This layout vs the 3-layer EAGLE-3 layout (EDSD paper App. A.3: ~25% less storage with 2 layers)."""
    k = len(layer_ids)
    mine = bytes_per_token(hidden_size, k, storage_dtype)
    eagle3 = bytes_per_token(hidden_size, EAGLE3_NUM_LAYERS, storage_dtype)
    parts = "layers + final hidden + entropy + top1 + id + mask"
    rows = [
        f"{'layout (' + storage_dtype + ', d=' + str(hidden_size) + ')':<40} {'bytes/token':>12} {'vs EAGLE-3':>11}",
        f"{f'this capture: {k} layers {list(layer_ids)}':<40} {mine:>12} {(mine - eagle3) / eagle3:>+11.1%}",
        f"{'EAGLE-3: 3 layers':<40} {eagle3:>12} {0:>+11.1%}",
    ]
    if disk_bytes_per_token is not None:
        rows.append(
            f"{'measured on disk (this capture)':<40} {disk_bytes_per_token:>12.1f} "
            f"{(disk_bytes_per_token - eagle3) / eagle3:>+11.1%}"
        )
    rows.append(
        f"(per token: {parts}; {STORAGE_DTYPES[storage_dtype]} bytes per hidden element, "
        f"{SCALAR_BYTES} bytes of scalars)"
    )
    return "\n".join(rows)
