"""The entropy stop: the rule on synthetic entropies and logits, the masked verify's accepted prefix,
its configuration, and served EDSD with the stop on: lossless, acceptance ending at every stop,
requests of one batch stopping on their own."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from sglang_edsd.cpu_support import ops
from sglang_edsd.easd.rule import entropy_and_top
from sglang_edsd.entropy_stop import (
    NEVER_ACCEPTED,
    SIDECAR,
    EntropyStop,
    EntropyStopError,
    all_stopped,
    kept_steps,
    mask_dropped,
)
from tests.helpers import chat_ids


def test_kept_steps_end_at_the_first_step_above_the_threshold() -> None:
    entropy = torch.tensor([[0.1, 0.2, 3.0, 0.1], [2.0, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1], [0.5, 1.0, 1.5, 9.0]])
    assert kept_steps(entropy, 1.0).tolist() == [3, 1, 4, 3]  # 1.0 itself does not cross
    assert kept_steps(entropy, float("inf")).tolist() == [4, 4, 4, 4]
    assert kept_steps(entropy, 0.0).tolist() == [1, 1, 1, 1]  # d_1 is always proposed
    assert not all_stopped(entropy[:, :1], 1.0) and all_stopped(entropy[:2, :3], 1.0)


def test_the_rule_on_synthetic_logits_stops_where_the_draft_is_unsure() -> None:
    """Peaked logits have near-zero entropy, flat ones log(V): the stop falls on the first flat step."""
    vocab = 64
    peaked, flat = torch.full((vocab,), -20.0), torch.zeros(vocab)
    peaked[3] = 20.0
    steps = [[peaked, peaked, flat, peaked], [flat, peaked, peaked, peaked], [peaked] * 4]
    entropy = torch.stack([entropy_and_top(torch.stack(s), 1)[0] for s in steps])
    assert entropy[0, 2] == pytest.approx(torch.log(torch.tensor(float(vocab))).item(), rel=1e-5)
    assert kept_steps(entropy, threshold=1.0).tolist() == [3, 1, 4]


def _chain_verify(candidates: torch.Tensor, target: torch.Tensor) -> tuple[list[int], list[list[int]]]:
    """SGLang's greedy verify (the CPU op, equal to its Triton kernel: tests/test_cpu_ops.py) of
    chains [B, S+1]: accepted counts and each request's emitted tokens (accepted + bonus)."""
    bsz, n = candidates.shape
    predicts = torch.zeros(bsz * n, dtype=torch.int32)
    accept_index = torch.full((bsz, n), -1, dtype=torch.int32)
    accepted = torch.zeros(bsz, dtype=torch.int32)
    chain_next = torch.tensor([[*range(1, n), -1]] * bsz)
    ops.verify_tree_greedy_cpu(
        predicts,
        accept_index,
        accepted,
        candidates,
        torch.arange(bsz * n).view(bsz, n),
        chain_next,
        torch.full((bsz, n), -1),
        target,
    )
    emitted = [[int(predicts[i]) for i in row if i >= 0] for row in accept_index.tolist()]
    return accepted.tolist(), emitted


def test_masked_verify_accepts_the_unmasked_prefix_up_to_the_stop() -> None:
    """Masking never changes what is emitted, only where acceptance ends: the masked verify's
    tokens are a prefix of the unmasked one's, min(accepted, kept) long plus the target's bonus."""
    gen = torch.Generator().manual_seed(0)
    bsz, steps = 64, 4
    target = torch.randint(0, 3, (bsz, steps + 1), generator=gen)
    # Proposals agree with the target's prediction at the previous node most of the time.
    agree = torch.rand(bsz, steps, generator=gen) < 0.7
    proposals = torch.where(agree, target[:, :-1], (target[:, :-1] + 1) % 3)
    candidates = torch.cat([torch.full((bsz, 1), 7), proposals], dim=1)
    keep = torch.randint(1, steps + 1, (bsz,), generator=gen, dtype=torch.int32)
    masked = mask_dropped(candidates.flatten(), keep).view(bsz, steps + 1)
    assert (masked[:, 1:] == NEVER_ACCEPTED).sum(1).tolist() == (steps - keep).tolist()
    full_acc, full_out = _chain_verify(candidates, target)
    acc, out = _chain_verify(masked, target)
    assert acc == [min(a, int(k)) for a, k in zip(full_acc, keep)]
    assert all(o == f[: len(o)] for o, f in zip(out, full_out))
    assert any(a < f for a, f in zip(acc, full_acc)) and any(a == f for a, f in zip(acc, full_acc))


@pytest.mark.parametrize(
    ("value", "message"),
    [("warm", "give a threshold in nats or 'draft'"), ("-1", ">= 0 nats"), ("draft", "calibrate-stop")],
)
def test_bad_settings_name_the_problem(monkeypatch, tmp_path: Path, value: str, message: str) -> None:
    monkeypatch.setenv("SGLANG_EDSD_ENTROPY_STOP", value)
    with pytest.raises(EntropyStopError, match=message):
        EntropyStop.from_env(tmp_path)


def test_settings_from_a_number_the_sidecar_or_nothing(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SGLANG_EDSD_ENTROPY_STOP", raising=False)
    assert EntropyStop.from_env(tmp_path) is None
    monkeypatch.setenv("SGLANG_EDSD_ENTROPY_STOP", "2.5")
    assert EntropyStop.from_env(None) == EntropyStop(2.5)
    (tmp_path / SIDECAR).write_text(json.dumps({"threshold": 1.25, "steps": 4}))
    monkeypatch.setenv("SGLANG_EDSD_ENTROPY_STOP", "draft")
    assert EntropyStop.from_env(tmp_path) == EntropyStop(1.25)
    (tmp_path / SIDECAR).write_text("{}")
    with pytest.raises(EntropyStopError, match="numeric 'threshold'"):
        EntropyStop.from_env(tmp_path)


SERVED_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
    "Explain what a hash table is in two sentences.",
]
SERVED_TOKENS = 40
# About the median draft entropy (nats, 8192-token draft vocabulary) of the shipped draft: stops happen, not always.
THRESHOLD = 3.5


@pytest.fixture(scope="module")
def stop_servers(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
    from sglang_edsd.launcher import cpu_args, edsd_args, launch_all
    from tests.servers import LOG_DIR, start_all

    plain = start_all({"none": (smollm2, cpu_args("float32", max_total_tokens=8192))})
    args = cpu_args("float32", max_total_tokens=8192) + edsd_args(shipped_draft(SMOLLM2_EDSD))
    trace = tmp_path_factory.mktemp("stop") / "trace.jsonl"
    env = {"SGLANG_EDSD_ENTROPY_STOP": str(THRESHOLD), "SGLANG_EDSD_TRACE": str(trace)}
    started = dict(plain)
    try:
        started.update(launch_all({"edsd-stop": (smollm2, args)}, LOG_DIR, env=env))
        started["edsd-stop"].trace = trace
        yield started
    finally:
        for s in started.values():
            s.stop()


def kept_and_accepted(records: list[dict]) -> tuple[list[int], list[int], list[int]]:
    """Per trace record: proposals the stop kept, proposals accepted, and rows verified (the cut chain's depth)."""
    kept = [int(kept_steps(torch.tensor([r["draft_entropy"]]), THRESHOLD)) for r in records]
    return kept, [r["accepted"] for r in records], [len(r["draft_entropy"]) for r in records]


@pytest.mark.server
def test_served_stop_is_lossless_and_acceptance_ends_at_each_stop(stop_servers, smollm2: Path) -> None:
    """Four requests at once (one batch, each stopping on its own): output equal to no speculation,
    no verify accepting past its request's stop, stops both before and at the full depth, and a
    round's chain cut no shorter than its deepest request's stop."""
    from tests.servers import greedy_ids

    stop = stop_servers["edsd-stop"]
    prompts = [chat_ids(smollm2, p) for p in SERVED_PROMPTS]
    before = len(stop.trace.read_text().splitlines())
    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda ids: greedy_ids(stop, ids, SERVED_TOKENS), prompts))
    for ids, out in zip(prompts, got):
        assert out["ids"] == greedy_ids(stop_servers["none"], ids, SERVED_TOKENS)["ids"]
    records = [json.loads(line) for line in stop.trace.read_text().splitlines()[before:]]
    kept, accepted, depth = kept_and_accepted(records)
    assert all(a <= k <= d for a, k, d in zip(accepted, kept, depth))
    assert min(kept) < 4 and max(kept) == 4
    assert any(a == k < 4 for a, k in zip(accepted, kept))  # a stop that cut a chain the target agreed with so far


@pytest.mark.server
def test_served_stop_alone_verifies_only_the_kept_rows(stop_servers, smollm2: Path) -> None:
    """At batch 1 every round's chain (verify and draft extend) ends at the request's own stop:
    fewer verify rows wherever the draft was unsure, the same output as no speculation."""
    from tests.servers import greedy_ids

    stop = stop_servers["edsd-stop"]
    ids = chat_ids(smollm2, SERVED_PROMPTS[2])
    before = len(stop.trace.read_text().splitlines())
    out = greedy_ids(stop, ids, SERVED_TOKENS)
    assert out["ids"] == greedy_ids(stop_servers["none"], ids, SERVED_TOKENS)["ids"]
    records = [json.loads(line) for line in stop.trace.read_text().splitlines()[before:]]
    kept, accepted, depth = kept_and_accepted(records)
    assert kept == depth
    assert min(depth) < 4 and all(a <= d for a, d in zip(accepted, depth))


def test_threshold_choice_trades_tokens_against_draft_steps() -> None:
    """Step 2 is never accepted, step 1 always: stopping after step 1 loses no token and saves a
    step. A stop keeps the step that crosses, so only a threshold below step 1's entropy (0.5)
    stops there; with free draft steps nothing beats the full chain."""
    from sglang_edsd.entropy_stop_calibrate import choose_threshold

    entropy = torch.tensor([[0.5, 5.0]] * 10)
    accepted = torch.ones(10, dtype=torch.long)
    paid = choose_threshold(entropy, accepted, fixed_ms=10.0, step_ms=5.0)
    assert 0.0 <= paid["best"]["threshold"] < 0.5 and paid["best"]["draft_steps"] == 0.0
    assert paid["best"]["tokens_per_round"] == paid["full_chain"]["tokens_per_round"] == 2.0
    assert paid["best"]["speedup_vs_full_chain"] == pytest.approx(15.0 / 10.0)
    free = choose_threshold(entropy, accepted, fixed_ms=10.0, step_ms=0.0)
    assert free["best"]["speedup_vs_full_chain"] == 1.0


def test_calibration_on_a_tiny_run_writes_the_threshold_the_server_reads(
    tiny_calibration, tmp_path: Path, monkeypatch, capsys
) -> None:
    import argparse

    from sglang_edsd.entropy_stop_command import add_calibrate_stop_arguments, calibrate_stop_main

    p = argparse.ArgumentParser()
    add_calibrate_stop_arguments(p)
    draft = Path(shutil.copytree(tiny_calibration["draft"], tmp_path / "draft"))  # the sidecar goes in it
    report = tmp_path / "report.json"
    args = ["--draft", str(draft), "--capture", str(tiny_calibration["capture"]), "--steps", "2"]
    calibrate_stop_main(p.parse_args([*args, "--report", str(report), "--no-progress"]))
    out = json.loads(report.read_text())
    # Rows 0..26 of each 30-token sample have 2 tokens ahead; their first proposal (i+2) is an answer from i = 3.
    assert out["positions"] == 6 * 24 and out["steps"] == 2
    assert out["best"]["speedup_vs_full_chain"] >= 1.0 and report.with_suffix(".png").exists()
    assert all(0 <= r["accept"] <= 1 for r in out["acceptance_by_entropy"])
    monkeypatch.setenv("SGLANG_EDSD_ENTROPY_STOP", "draft")
    assert EntropyStop.from_env(draft) == EntropyStop(out["threshold"])
    assert "serve with SGLANG_EDSD_ENTROPY_STOP=draft" in capsys.readouterr().out
