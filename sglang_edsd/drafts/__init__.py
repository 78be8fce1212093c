"""Drafts shipped inside the package (bf16 safetensors + config + model card per folder).

`benchmarks/smollm2_online_drafts.sh` rebuilds them; each folder's README.md is its model card.
`inputs/` holds what they were built from (regenerated data, EDSelect's result, EASD configs),
read from a checkout by the build scripts, benchmarks and tests; it is not package data.
"""

from __future__ import annotations

from pathlib import Path

SMOLLM2_EDSD = "smollm2-135m-instruct-edsd"
SMOLLM2_EAGLE3 = "smollm2-135m-instruct-eagle3"


def shipped_draft(name: str = SMOLLM2_EDSD) -> Path:
    """The folder of a shipped draft; a clear error if this install lacks it."""
    folder = Path(__file__).parent / name
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        known = sorted(p.name for p in Path(__file__).parent.iterdir() if (p / "config.json").is_file())
        raise FileNotFoundError(f"no shipped draft {name!r} in {folder.parent} (shipped: {known}); "
                                "reinstall the package or rebuild it with benchmarks/smollm2_online_drafts.sh")
    return folder
