"""GPU only (skipped here): the EDSD draft forward under SGLang's CUDA graphs, side stream on/off.

SGLang captures the draft-extend and draft-decode forwards into CUDA graphs on a GPU; this
serves the hand-built tiny target/draft of tests/synthetic.py that way and checks the
output is the target's and the always-right draft is still accepted, so a capture that
broke the EDFuse fork/join (or read stale buffers on replay) fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sglang_edsd.launcher import edsd_args
from tests import synthetic
from tests.servers import greedy_ids, start_all
from tests.test_wiring import NEW_TOKENS, _expected, _prompts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("side_stream", ["1", "0"])
def test_cuda_graph_draft_forward(smollm2: Path, tmp_path: Path, side_stream: str, monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_EDSD_SIDE_STREAM", side_stream)
    target = synthetic.build_target(tmp_path / "target", smollm2)
    draft = synthetic.build_draft(tmp_path / "draft", target)
    args = ["--dtype", "float32", "--max-total-tokens", "4096", *edsd_args(draft)]
    server = start_all({f"gpu-tiny-side{side_stream}": (target, args)})[f"gpu-tiny-side{side_stream}"]
    try:
        results = [greedy_ids(server, p, NEW_TOKENS) for p in _prompts()]
    finally:
        server.stop()
    for p, r in zip(_prompts(), results):
        assert r["ids"] == _expected(p, NEW_TOKENS)
    assert min(r["meta"]["spec_accept_length"] for r in results) >= 4.5
