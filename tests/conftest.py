"""Shared fixtures: the real SmolLM2 target, drafts, and real SGLang servers.

Servers are module-scoped so at most a couple run at once on the 24 GiB machine; each is
a real `python -m sglang.launch_server` process started through `sglang_edsd.launcher`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sglang_edsd.assets import smollm2_path
from sglang_edsd.draft_io import init_draft


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2_draft(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised EDSD draft for SmolLM2 (8k draft vocab)."""
    return init_draft(smollm2, tmp_path_factory.mktemp("edsd-draft"), draft_vocab_size=8192, seed=0)


@pytest.fixture(scope="session")
def tiny_calibration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama target, a capture of random text at layers 1 and 3, a random draft reading them
    (and one reading layers 2 and 4): what EASD's and the entropy stop's calibrations read."""
    import json

    import torch

    from sglang_edsd.capture import capture
    from tests.synthetic import tiny_llama

    work = tmp_path_factory.mktemp("easd-calibrate")
    tiny_llama(work / "target", num_layers=6)
    gen = torch.Generator().manual_seed(1)
    with (work / "tokens.jsonl").open("w") as f:
        for i in range(6):
            ids = torch.randint(0, 300, (30,), generator=gen).tolist()
            f.write(json.dumps({"id": f"s{i}", "input_ids": ids, "loss_mask": [0] * 5 + [1] * 25}) + "\n")
    capture(work / "target", work / "tokens.jsonl", work / "capture", [1, 3], dtype="float32", progress=False)
    return {
        "capture": work / "capture",
        "draft": init_draft(work / "target", work / "draft", layer_ids=(1, 3), draft_vocab_size=64),
        "other_layers": init_draft(work / "target", work / "draft24", layer_ids=(2, 4), draft_vocab_size=64),
    }
