"""SmolLM2-135M-Instruct served by real SGLang on CPU: EDSD is lossless through the APIs users call.

Every comparison is token for token against the same server flags without speculation, in
float32 (docs/conventions.md), with a random EDSD draft (right almost never, so nearly every
verify rejects: the hardest case for rollback) and SGLang's own EAGLE3 as the baseline path.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from sglang_edsd.draft_io import init_draft
from sglang_edsd.launcher import cpu_args, edsd_args, spec_args
from tests.servers import generate, start_all

pytestmark = pytest.mark.server

MAX_TOKENS = 24
CHUNK = 128
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
    "Translate 'good morning' into Spanish and German.",
]
LONG_PROMPT = "Summarise this text in one sentence:\n" + " ".join(
    f"Paragraph {i}: the quick brown fox jumps over the lazy dog while the river flows to the sea." for i in range(20)
)


# SGLang's adaptive depth, as an EAGLE3 user starts it on CPU (its per-depth runtime states build
# decode graph runners unless graphs are off, and CPU has none)
ADAPTIVE = ["--speculative-algorithm", "EDSD", "--speculative-adaptive", "--disable-cuda-graph"]
ADAPTIVE += ["--speculative-draft-model-path"]  # then the draft folder


@pytest.fixture(scope="module")
def servers(smollm2: Path, smollm2_draft: Path, tmp_path_factory: pytest.TempPathFactory):
    eagle3 = init_draft(smollm2, tmp_path_factory.mktemp("eagle3"), draft_vocab_size=8192, input_module="fc")
    base = cpu_args("float32", max_total_tokens=8192) + ["--chunked-prefill-size", str(CHUNK)]
    started = start_all(
        {
            "smollm2-plain": (smollm2, base),
            "smollm2-edsd": (smollm2, base + edsd_args(smollm2_draft)),
            "smollm2-eagle3": (smollm2, base + spec_args("EAGLE3", eagle3)),
            "smollm2-edsd-adaptive": (smollm2, base + ADAPTIVE + [str(smollm2_draft)]),
        }
    )
    yield started
    for s in started.values():
        s.stop()


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")


def _chat(server, prompt: str, stream: bool = False) -> str:
    client = _client(server)
    messages = [{"role": "user", "content": prompt}]
    kwargs = dict(model="default", messages=messages, temperature=0, max_tokens=MAX_TOKENS)
    if not stream:
        return client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = client.chat.completions.create(stream=True, **kwargs)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture(scope="module")
def reference(servers) -> dict[str, str]:
    """The target's own greedy answers (no speculation), one request at a time."""
    return {p: _chat(servers["smollm2-plain"], p) for p in PROMPTS + [LONG_PROMPT]}


def test_chat_concurrent_requests_lossless(servers, reference) -> None:
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(lambda p: _chat(servers["smollm2-edsd"], p), PROMPTS))
    assert answers == [reference[p] for p in PROMPTS]
    assert all(answers)


def test_streaming_lossless(servers, reference) -> None:
    assert _chat(servers["smollm2-edsd"], PROMPTS[1], stream=True) == reference[PROMPTS[1]]


def test_chunked_prefill_and_radix_hit_lossless(servers, reference) -> None:
    edsd = servers["smollm2-edsd"]
    first = _chat(edsd, LONG_PROMPT)  # longer than the chunk size: chunked prefill
    second = _chat(edsd, LONG_PROMPT)  # same prefix again: served from the radix cache
    assert first == second == reference[LONG_PROMPT]


def test_generate_reports_spec_stats(servers) -> None:
    payload = {"text": LONG_PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 16}}
    generate(servers["smollm2-edsd"], payload)
    meta = generate(servers["smollm2-edsd"], payload)["meta_info"]
    assert meta["cached_tokens"] > CHUNK  # the repeat hit the radix cache
    assert meta["spec_verify_ct"] >= 1
    assert 1.0 <= meta["spec_accept_length"] <= 5.0


def test_eagle3_baseline_serves_lossless(servers, reference) -> None:
    """The same server flags run SGLang's own EAGLE3 with an EAGLE-3 draft (the baseline)."""
    resp = _client(servers["smollm2-eagle3"]).chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPTS[2]}],
        temperature=0,
        max_tokens=MAX_TOKENS,
        extra_body={"return_spec_tokens_details": True},
    )
    assert resp.choices[0].message.content == reference[PROMPTS[2]]
    spec = resp.model_extra["sglext"]["spec_tokens_details"]
    assert spec["spec_verify_ct"] >= 1 and 1.0 <= spec["spec_accept_length"] <= 5.0


def test_adaptive_depth_runs_for_edsd_and_stays_lossless(servers, reference) -> None:
    """`--speculative-adaptive` works for EDSD as for EAGLE3 (patches/adaptive_spec_for_edsd.py):
    SGLang's controller starts instead of logging that it is disabled, and output is unchanged."""
    server = servers["smollm2-edsd-adaptive"]
    assert [_chat(server, p) for p in PROMPTS[:2]] == [reference[p] for p in PROMPTS[:2]]
    log = server.log_path.read_text(errors="replace")
    assert "speculative_adaptive disabled" not in log
    assert "AdaptiveSpeculativeParams initialized" in log and "Built adaptive runtime state" in log
