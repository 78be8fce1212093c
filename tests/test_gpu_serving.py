"""GPU only (skipped here): the EDSD draft forward under SGLang's CUDA graphs, side stream on/off.

SGLang captures the draft-extend and draft-decode forwards into CUDA graphs on a GPU; this
serves the hand-built tiny target/draft of tests/synthetic.py that way and checks the
output is the target's and the always-right draft is still accepted, so a capture that
broke the EDFuse fork/join (or read stale buffers on replay) fails here. Two
configurations: bf16 with SGLang's default attention backend (what users run; fa3 on
Hopper), and float32 on the triton backend, which takes fp32 (FlashAttention-3, the Hopper
default, runs fp16/bf16 only).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sglang_edsd.launcher import edsd_args
from tests import synthetic
from tests.servers import greedy_ids, start_all

pytestmark = [pytest.mark.server, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIGS = {
    "bf16-default-backend": ["--dtype", "bfloat16"],
    "fp32-triton": ["--dtype", "float32", "--attention-backend", "triton"],
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("side_stream", ["1", "0"])
def test_cuda_graph_draft_forward(smollm2: Path, tmp_path: Path, config: str, side_stream: str, monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_EDSD_SIDE_STREAM", side_stream)
    target = synthetic.build_target(tmp_path / "target", smollm2)
    draft = synthetic.build_draft(tmp_path / "draft", target)
    args = [*CONFIGS[config], "--max-total-tokens", "4096", *edsd_args(draft)]
    name = f"gpu-tiny-{config}-side{side_stream}"
    server = start_all({name: (target, args)})[name]
    try:
        results = [greedy_ids(server, p, synthetic.NEW_TOKENS) for p in synthetic.wiring_prompts()]
    finally:
        server.stop()
    for p, r in zip(synthetic.wiring_prompts(), results):
        assert r["ids"] == synthetic.expected_continuation(p, synthetic.NEW_TOKENS)
    assert min(r["meta"]["spec_accept_length"] for r in results) >= 4.5
