"""EDFuse, the two-layer capture and verify are wired: hand-built drafts on a tiny target.

See tests/synthetic.py for the construction. A random draft is never right and a bigram
draft ignores the target, so this is the test that shows EDSD reads the captured layers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from sglang_edsd.launcher import cpu_args, edsd_args
from tests import synthetic
from tests.servers import greedy_ids, start_all

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def wiring_servers(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wiring")
    target = synthetic.build_target(root / "target", smollm2, corrupt_shift=0)
    corrupted = synthetic.build_target(root / "target-corrupted-layer1", smollm2, corrupt_shift=5)
    perfect = synthetic.build_draft(root / "draft-perfect", target)
    partial = synthetic.build_draft(root / "draft-partial", target, wrong_codes=frozenset({3, 7, 11, 15}))
    args = cpu_args("float32", max_total_tokens=4096)
    servers = start_all(
        {
            "tiny-perfect": (target, args + edsd_args(perfect)),
            "tiny-partial": (target, args + edsd_args(partial)),
            "tiny-corrupted": (corrupted, args + edsd_args(perfect)),
        }
    )
    yield servers
    for s in servers.values():
        s.stop()


def _run(server, prompts) -> tuple[float, list[dict]]:
    results = [greedy_ids(server, p, synthetic.NEW_TOKENS) for p in prompts]
    for p, r in zip(prompts, results):
        assert r["ids"] == synthetic.expected_continuation(p, synthetic.NEW_TOKENS), (
            "speculative output differs from the target's greedy output"
        )
    return statistics.mean(r["meta"]["spec_accept_length"] for r in results), results


def test_always_right_draft(wiring_servers) -> None:
    tau, results = _run(wiring_servers["tiny-perfect"], synthetic.wiring_prompts())
    assert tau >= 4.5, tau
    assert all(r["meta"]["spec_verify_ct"] < synthetic.NEW_TOKENS / 3 for r in results)


def test_partly_right_draft(wiring_servers) -> None:
    tau, _ = _run(wiring_servers["tiny-partial"], synthetic.wiring_prompts())
    assert 1.5 < tau < 4.5, tau


def test_corrupted_layer_features_drop_accept_length(wiring_servers) -> None:
    """Same draft, target whose captured layer 1 carries other features (its output is unchanged)."""
    tau_ok, _ = _run(wiring_servers["tiny-perfect"], synthetic.wiring_prompts())
    tau_bad, _ = _run(wiring_servers["tiny-corrupted"], synthetic.wiring_prompts())
    assert tau_bad < 1.5 and tau_ok - tau_bad > 2, (tau_ok, tau_bad)


def test_max_tokens_and_stop_inside_an_accepted_chain(wiring_servers, smollm2: Path) -> None:
    """With chains of 5 always accepted, limits at 7 tokens land mid-chain and must be honoured."""
    server = wiring_servers["tiny-perfect"]
    prompt = synthetic.wiring_prompts()[0]
    want = synthetic.expected_continuation(prompt, 7)
    assert greedy_ids(server, prompt, 7)["ids"] == want
    stopped = greedy_ids(server, prompt, 40, stop_token_ids=[want[6]])
    assert stopped["ids"][:7] == want and len(stopped["ids"]) == 7
    # A stop string: the text of the 7th token; the output text ends right before it.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)  # the tiny target carries SmolLM2's tokenizer
    stop = tok.decode([want[6]])
    full = tok.decode(synthetic.expected_continuation(prompt, 40))
    by_text = greedy_ids(server, prompt, 40, stop=[stop])
    assert by_text["text"] == full.split(stop)[0]
    assert len(by_text["ids"]) < 12
