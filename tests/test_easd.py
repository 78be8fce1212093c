"""EASD: the rule on hand-built distributions, its configuration errors, and the rule inside real SGLang.

Served checks (SmolLM2, shipped EDSD draft, float32, greedy): thresholds at +inf change nothing
(same tokens and acceptance as plain EDSD); thresholds that make the rule fire everywhere reject
every proposal (no draft token accepted), and each emitted token is the target's best token or,
where the draft had proposed that one, its second best, checked against transformers. The
entropy trace, which rides on the same worker, changes no token and records per verify what
SGLang counted and the target entropies transformers computes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sglang_edsd.easd.rule import ENV, EASDConfig, EASDConfigError, entropy_and_top, mask_rejected, overlap
from sglang_edsd.serving.entropy_trace import ENV as TRACE_ENV
from sglang_edsd.serving.entropy_trace import read_trace
from tests.helpers import chat_ids


def _chain_case(steps: int = 3, vocab: int = 8):
    """One request, a chain of `steps`; the target's verify rows are flat over ids 0..3 with id 1 best."""
    logits = torch.full((steps + 1, vocab), -10.0)
    logits[:, :4] = torch.tensor([1.0, 1.2, 0.9, 0.8])
    draft_tokens = torch.tensor([5] + [1] * steps)  # node 0 is the last verified token; proposals d_k = 1
    draft_entropy = torch.full((1, steps), 1.3)
    draft_top = torch.tensor([[[1, 0, 2, 3]] * steps])
    return logits, draft_tokens, draft_entropy, draft_top


def test_rule_fires_and_greedy_then_takes_the_best_other_token():
    logits, tokens, h_draft, top_draft = _chain_case()
    cfg = EASDConfig(draft_entropy=1.0, target_entropy=1.0, top_n=4, min_overlap=0.75)
    fired = mask_rejected(cfg, logits, tokens, h_draft, top_draft)
    assert fired.tolist() == [[True, True, True]]
    assert logits[:3].argmax(-1).tolist() == [0, 0, 0]  # id 1 removed -> next best id 0
    assert logits[3].argmax().item() == 1  # the row after the last proposal scores no proposal


@pytest.mark.parametrize(
    "cfg",
    [
        EASDConfig(draft_entropy=1.5, target_entropy=1.0, top_n=4),  # draft confident enough
        EASDConfig(draft_entropy=1.0, target_entropy=1.5, top_n=4),  # target confident enough
    ],
)
def test_rule_needs_both_entropies_high(cfg):
    logits, tokens, h_draft, top_draft = _chain_case()
    before = logits.clone()
    assert not mask_rejected(cfg, logits, tokens, h_draft, top_draft).any()
    assert torch.equal(logits, before)


def test_rule_needs_the_candidate_sets_to_overlap():
    logits, tokens, h_draft, _ = _chain_case()
    disjoint = torch.tensor([[[4, 5, 6, 1]] * 3])  # shares 1 of 4 ids with the target's top-4
    cfg = EASDConfig(draft_entropy=1.0, target_entropy=1.0, top_n=4, min_overlap=0.5)
    assert not mask_rejected(cfg, logits, tokens, h_draft, disjoint).any()
    assert mask_rejected(EASDConfig(1.0, 1.0, top_n=4, min_overlap=0.25), logits, tokens, h_draft, disjoint).all()


def test_rule_scores_proposal_k_with_verify_row_k_minus_1():
    logits, tokens, h_draft, top_draft = _chain_case(steps=2)
    h_draft[0, 0] = 0.0  # only d_2 passes the draft-entropy test
    mask_rejected(EASDConfig(1.0, 1.0, top_n=4), logits, tokens, h_draft, top_draft)
    assert logits[0, 1].item() == pytest.approx(1.2) and logits[1, 1].item() == -math.inf


def test_entropy_top_and_overlap():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, -10.0, 5.0]])
    entropy, top = entropy_and_top(logits, 2)
    assert entropy[0].item() == pytest.approx(math.log(4))
    assert entropy[1].item() < 0.1
    assert top[1].tolist() == [0, 3]
    assert overlap(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[4, 3, 9, 8]])).item() == 0.5


@pytest.mark.parametrize(
    "value, message",
    [
        ('{"draft_entropy": 1, "target_entropy": 1, "top_k": 3}', "unknown EASD fields"),
        ('{"draft_entropy": 1, "target_entropy": 1, "top_n": 0}', "top_n must be in 1..100"),
        ('{"draft_entropy": 1, "target_entropy": 1, "min_overlap": 2}', "min_overlap must be a fraction"),
        ('{"draft_entropy": 1}', "target_entropy"),
        ("{not json", "not JSON"),
        ("/no/such/easd.json", "no such file"),
    ],
)
def test_bad_configuration_names_the_problem(monkeypatch, value, message):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(EASDConfigError, match=message):
        EASDConfig.from_env()


def test_configuration_from_file_and_unset(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(ENV, raising=False)
    assert EASDConfig.from_env() is None
    path = tmp_path / "easd.json"
    path.write_text(json.dumps({"draft_entropy": 2.5, "target_entropy": 1.5, "top_n": 4}))
    monkeypatch.setenv(ENV, str(path))
    assert EASDConfig.from_env() == EASDConfig(2.5, 1.5, top_n=4, min_overlap=0.6)


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [
        (["--cuda-graph-backend-decode", "disabled"], True),
        (["--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled"], True),
        (["--cuda-graph-config", '{"decode": {"backend": "disabled"}}'], True),
        (["--disable-cuda-graph"], True),
        (["--cuda-graph-backend-prefill", "disabled"], False),  # the draft's graphs are decode-phase graphs
        ([], False),
    ],
)
def test_easd_accepts_every_way_of_turning_draft_cuda_graphs_off(
    smollm2: Path, flags: list[str], allowed: bool
) -> None:
    """Checked on the config SGLang publishes for a CUDA server, as the worker sees it."""
    from sglang.srt.plugins import load_plugins
    from sglang.srt.runtime_context import create_context, use_context
    from sglang.srt.server_args import prepare_server_args

    from sglang_edsd.easd.worker import check_draft_runs_eagerly

    load_plugins()
    sa = prepare_server_args(["--model-path", str(smollm2), "--device", "cuda", *flags])
    sa.resolve_once()
    with use_context(create_context(sa, role="scheduler")):
        check_draft_runs_eagerly("cpu")  # CPU serving has no CUDA graphs to refuse
        if allowed:
            check_draft_runs_eagerly("cuda")
        else:
            with pytest.raises(EASDConfigError, match="--cuda-graph-backend-decode=disabled"):
                check_draft_runs_eagerly("cuda")
    if flags[:2] == ["--cuda-graph-backend-decode", "disabled"]:
        assert not sa.disable_cuda_graph  # what the old check read, so it refused these forms


SERVED_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
]
SERVED_TOKENS = 32


@pytest.fixture(scope="module")
def easd_servers(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
    from sglang_edsd.launcher import cpu_args, edsd_args
    from tests.servers import LOG_DIR, start_all

    args = cpu_args("float32", max_total_tokens=8192) + edsd_args(shipped_draft(SMOLLM2_EDSD))
    never = EASDConfig(draft_entropy=math.inf, target_entropy=math.inf)
    always = EASDConfig(draft_entropy=-1.0, target_entropy=-1.0, top_n=1, min_overlap=0.0)
    from sglang_edsd.launcher import launch_all

    started = start_all({"easd-off": (smollm2, args)})
    try:
        for name, cfg in (("easd-never", never), ("easd-always", always)):
            started.update(launch_all({name: (smollm2, args)}, LOG_DIR, env={ENV: cfg.to_env()}))
        trace = tmp_path_factory.mktemp("trace") / "trace.jsonl"
        started.update(launch_all({"edsd-traced": (smollm2, args)}, LOG_DIR, env={TRACE_ENV: str(trace)}))
        started["edsd-traced"].trace = trace
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.mark.server
def test_served_thresholds_at_infinity_change_nothing(easd_servers, smollm2: Path):
    from tests.servers import greedy_ids

    for prompt in SERVED_PROMPTS:
        ids = chat_ids(smollm2, prompt)
        off = greedy_ids(easd_servers["easd-off"], ids, SERVED_TOKENS)
        never = greedy_ids(easd_servers["easd-never"], ids, SERVED_TOKENS)
        assert never["ids"] == off["ids"]
        assert never["meta"]["spec_verify_ct"] == off["meta"]["spec_verify_ct"] > 0


@pytest.mark.server
def test_served_rule_firing_everywhere_rejects_every_proposal(easd_servers, smollm2: Path):
    """Each emitted token is the target's argmax unless the draft proposed it, then its runner-up."""
    from transformers import AutoModelForCausalLM

    from tests.servers import greedy_ids

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    runner_up = 0
    for prompt in SERVED_PROMPTS:
        ids = chat_ids(smollm2, prompt)
        out = greedy_ids(easd_servers["easd-always"], ids, SERVED_TOKENS)
        meta = out["meta"]
        # No proposal accepted; every verify emits one token (the first came from the prefill).
        assert meta["spec_num_correct_drafts"] == 0 and meta["spec_verify_ct"] == len(out["ids"]) - 1 > 0
        with torch.no_grad():
            logits = model(torch.tensor([ids + out["ids"]])).logits[0, len(ids) - 1 : -1]
        top2 = logits.topk(2, dim=-1).indices
        assert out["ids"][0] == top2[0, 0].item()  # the prefill's token: no draft was verified
        for t, token in enumerate(out["ids"]):
            assert token in top2[t].tolist(), f"token {t} of {prompt!r} is not the target's top-1 or top-2"
            runner_up += token == top2[t, 1].item()
    assert runner_up > 0  # the trained draft proposes the target's argmax often: the rule must change output


@pytest.mark.server
def test_served_entropy_trace_changes_nothing_and_matches_the_target(easd_servers, smollm2: Path):
    """Per request: as many records as verifies, accepted counts summing to SGLang's, and each judged
    position's target entropy equal to transformers' at that prefix of the final sequence."""
    from transformers import AutoModelForCausalLM

    from tests.servers import greedy_ids

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    traced = easd_servers["edsd-traced"]
    for prompt in SERVED_PROMPTS:
        ids = chat_ids(smollm2, prompt)
        off = greedy_ids(easd_servers["easd-off"], ids, SERVED_TOKENS)
        out = greedy_ids(traced, ids, SERVED_TOKENS)
        assert out["ids"] == off["ids"]
        records = [r for r in read_trace(traced.trace) if r["rid"] == out["meta"]["id"]]
        assert len(records) == out["meta"]["spec_verify_ct"] > 0
        assert sum(r["accepted"] for r in records) == out["meta"]["spec_num_correct_drafts"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids + out["ids"]])).logits[0], dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        verified = 1  # the prefill emitted the first token
        for r in records:
            assert len(r["draft_entropy"]) == 4 and all(x >= 0 for x in r["draft_entropy"])
            # Row k of this verify followed prompt + the first verified + k accepted tokens.
            for k in range(r["accepted"] + 1):
                pos = len(ids) + verified - 1 + k
                if pos < entropy.shape[0]:  # the last verify may overrun max_new_tokens
                    assert r["target_entropy"][k] == pytest.approx(entropy[pos].item(), abs=2e-3)
            verified += r["accepted"] + 1


def test_calibration_thresholds_are_percentiles_and_bound_the_firing_rate(tiny_calibration):
    from sglang_edsd.easd.calibrate import calibrate

    def run(percentile, min_overlap=0.0):
        return calibrate(
            tiny_calibration["draft"],
            tiny_calibration["capture"],
            percentile=percentile,
            top_n=3,
            min_overlap=min_overlap,
            steps=2,
            progress=False,
        )

    low, mid, high = run(0.0), run(50.0), run(100.0)
    # Step k of row i proposes token i+2+k: each of the 6 x 25 answer tokens (positions 5..29) once per step.
    assert mid["positions_per_step"] == [6 * 25, 6 * 25]
    assert low["config"]["draft_entropy"] < mid["config"]["draft_entropy"] < high["config"]["draft_entropy"]
    assert low["config"]["target_entropy"] < mid["config"]["target_entropy"] < high["config"]["target_entropy"]
    assert high["fire_rate_per_step"] == [0.0, 0.0]  # nothing is above the maximum
    assert all(r > 0.9 for r in low["fire_rate_per_step"])  # all but the minimum, any overlap allowed
    assert all(0.0 <= r <= 0.5 for r in mid["fire_rate_per_step"])  # both above their medians at most half
    assert run(0.0, min_overlap=1.0)["fire_rate_per_step"] <= low["fire_rate_per_step"]
    assert EASDConfig(**mid["config"]).top_n == 3


def test_calibration_errors_name_the_problem(tiny_calibration):
    from sglang_edsd.capture import CaptureError
    from sglang_edsd.easd.calibrate import calibrate

    with pytest.raises(CaptureError, match=r"layer ids \[2, 4\] were not captured.*needed by draft"):
        calibrate(tiny_calibration["other_layers"], tiny_calibration["capture"], progress=False)
    with pytest.raises(ValueError, match="percentile must be in"):
        calibrate(tiny_calibration["draft"], tiny_calibration["capture"], percentile=120, progress=False)
