"""The benchmark suite: a smoke run of `benchmarks/bench_all.py` on real SGLang servers, and the
entropy analysis on hand-built trace records.

The smoke run (one server with the shipped EDSD draft, one MT-Bench prompt, a few tokens, under 3 minutes)
checks that each question writes its JSON, markdown and PNG with the full setup, and that
its numbers are sane: finite, positive, 1 <= tau <= steps + 1, every request completed. It checks
nothing about speed; EDSD's output equal to no speculation is tests/test_serving.py's job, and
the speedup arithmetic against a "none" server is checked here on hand-built rows.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import subprocess
import sys
from pathlib import Path

import bench_entropy
import pytest

from tests.servers import require_cpu_servers

REPO = Path(__file__).resolve().parent.parent


def _finite_numbers(obj: object) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    return []


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    require_cpu_servers()  # bench_all serves on --device cpu by default
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_all.py"),
        "--quick",
        "--configs",
        "edsd",
        "--questions",
        "tau",
        "throughput",
        "latency",
        "system_prompts",
        "--results-dir",
        str(out),
        "--tasks",
        "mt_bench",
        "--tau-per-task",
        "1",
        "--tau-output-len",
        "8",
        "--batch-sizes",
        "2",
        "--throughput-output-len",
        "8",
        "--request-rates",
        "2",
        "--num-prompts",
        "2",
        "--latency-output-len",
        "8",
        "--system-per-task",
        "1",
        "--system-prompts",
        "1",
        "--system-output-len",
        "8",
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = {}
    for name in ("tau", "throughput", "latency", "system_prompts"):
        files = sorted(out.glob(f"{name}-*.json"))
        assert len(files) == 1, f"{name}: {files}"
        assert files[0].with_suffix(".md").read_text().startswith(("tau", "Batch", "Latency", "Robustness"))
        assert files[0].with_suffix(".png").stat().st_size > 1000
        results[name] = json.loads(files[0].read_text())
    return results


@pytest.mark.slow
@pytest.mark.server
def test_every_result_records_its_setup(smoke):
    for name, res in smoke.items():
        assert res["benchmark"] == name and res["complete"] is True and res["sglang_version"] and res["git_commit"]
        assert res["hardware"]["cpu_count"] >= 1 and "--device" in res["base_server_args"]
        assert [c["name"] for c in res["configs"]] == ["edsd"] and res["configs"][0]["shape"] == "chain, depth 4"


@pytest.mark.slow
@pytest.mark.server
def test_numbers_are_finite_and_tau_is_in_range(smoke):
    for res in smoke.values():
        assert all(math.isfinite(x) for x in _finite_numbers(res["results"]))
    tau = smoke["tau"]["results"]
    for row in tau["edsd"].values():
        assert row["verify_ct"] > 0 and 0 <= row["correct_drafts"] <= 4 * row["verify_ct"]
        assert 1 <= row["completion_tokens"] <= 8 and row["text"]
    for by_label in smoke["system_prompts"]["results"].values():
        assert all(1 <= v["tau"] <= 5 for v in by_label.values())
    for by_point in list(smoke["throughput"]["results"].values()) + list(smoke["latency"]["results"].values()):
        for row in by_point.values():
            assert row["completed"] == row["num_prompts"] and row["output_throughput"] > 0
            assert 0 < row["client_cpu_share"] <= (os.cpu_count() or 1)


def _record(accepted: int, target: list[float], draft: list[float] | None = None) -> dict:
    return {"rid": "r", "draft_entropy": draft or [1.0] * len(target), "target_entropy": target, "accepted": accepted}


def test_entropy_analysis_counts_judged_positions_only():
    # Position k is judged when k <= accepted: accepted for k < accepted, rejected at k = accepted.
    records = [_record(4, [0.1, 0.1, 0.1, 0.1]), _record(0, [5.0, 0.1, 0.1, 0.1]), _record(1, [0.1, 5.0, 5.0, 5.0])]
    res = bench_entropy.analyse(records)
    assert res["verifies"] == 3 and res["judged_positions"] == 4 + 1 + 2
    low, high = res["target"]["1"][0], res["target"]["1"][6]  # [0, 0.25) and [4, 6)
    assert (low["judged"], low["accepted"]) == (2, 2) and (high["judged"], high["accepted"]) == (1, 0)
    d2_high = res["target"]["2"][6]
    assert (d2_high["judged"], d2_high["accepted"], d2_high["rate"]) == (1, 0, 0.0)
    assert res["target"]["4"][6]["judged"] == 0 and res["target"]["4"][6]["rate"] is None
    assert res["target_quartile_rates"]["lowest"] == 1.0 and res["target_quartile_rates"]["highest"] == 0.0


def test_entropy_analysis_of_an_empty_trace_names_the_problem():
    with pytest.raises(ValueError, match="holds no verify records"):
        bench_entropy.analyse([])


def test_prompt_records_become_a_dataset_sglangs_load_generator_reads(tmp_path: Path):
    from serving_load import write_dataset
    from sglang.benchmark.datasets.custom import sample_custom_requests
    from transformers import AutoTokenizer

    from sglang_edsd.assets import smollm2_path

    records = [
        {"id": "a", "task": "t", "turns": ["Add 2 and 3."], "reference": {"answer": "5"}},
        {"id": "b", "task": "t", "turns": ["Name a colour."]},
    ]
    rows = sample_custom_requests(
        str(write_dataset(records, tmp_path / "d.jsonl")),
        2,
        AutoTokenizer.from_pretrained(smollm2_path()),
        fixed_output_len=16,
    )
    assert sorted(r.prompt for r in rows) == ["Add 2 and 3.", "Name a colour."]
    assert all(r.output_len == 16 for r in rows)


def test_easd_scoring_and_paired_interval():
    import bench_easd

    assert bench_easd.last_number("3 + 4 = 7, so the answer is 1,204.") == 1204.0
    assert bench_easd.last_number("no digits") is None
    qs = bench_easd.arithmetic_questions(9)
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    for q in qs:
        a, op, b = q["question"].split()[2:5]
        assert q["answer"] == ops[op](int(a), int(b.rstrip("?")))
    assert {q["question"].split()[3] for q in qs} == set(ops)
    diff, lo, hi = bench_easd.paired_interval([True] * 10 + [False] * 10, [True] * 10 + [True] * 5 + [False] * 5)
    assert diff == pytest.approx(0.25) and lo < 0.25 < hi and lo > 0  # 5 of 20 gained, none lost
    same = bench_easd.paired_interval([True, False] * 10, [True, False] * 10)
    assert same == (0.0, 0.0, 0.0)


def _answers(correct: list[bool], text: str) -> dict[str, dict]:
    return {
        f"q{i}": {
            "correct": c,
            "text": f"{text}{i}",
            "completion_tokens": 10,
            "seconds": 2.0,
            "verify_ct": 4,
            "correct_drafts": 2,
        }
        for i, c in enumerate(correct)
    }


def test_easd_report_pairs_with_plain_edsd_and_screens_without_it(tmp_path):
    import argparse

    import bench_easd

    args = argparse.Namespace(task="gsm8k", answer_len=64, concurrency=4)
    screen = bench_easd.report({"none": _answers([True, False, False, False], "a")}, args, tmp_path / "s.png")
    row = next(line for line in screen.splitlines() if line.startswith("| none")).split("|")
    assert float(row[2]) == 0.25 and row[3].strip() == "-" and "4 in flight" in screen
    paired = bench_easd.report(
        {"edsd": _answers([True, False, False, False], "a"), "easd-x": _answers([True, True, False, False], "b")},
        args,
        tmp_path / "p.png",
    )
    row = next(line for line in paired.splitlines() if line.startswith("| easd-x")).split("|")
    assert float(row[3]) == 0.25 and row[5].strip() == "0" and row[6].strip() == "1" and row[9].strip() == "0/4"
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_tau_summary_speedup_against_none_and_without_it():
    import bench_tau

    def row(cfg: str, pid: str, seconds: float, text: str, verify: int = 0, correct: int = 0) -> dict:
        return {
            "config": cfg,
            "id": pid,
            "task": "gsm8k",
            "text": text,
            "completion_tokens": 10,
            "seconds": seconds,
            "verify_ct": verify,
            "correct_drafts": correct,
            "client_cpu_s": 0.1,
        }

    prompts = [{"id": "a", "task": "gsm8k"}, {"id": "b", "task": "gsm8k"}]
    none = {("none", "a"): row("none", "a", 2.0, "x"), ("none", "b"): row("none", "b", 2.0, "y")}
    edsd = {("edsd", "a"): row("edsd", "a", 1.0, "x", 6, 3), ("edsd", "b"): row("edsd", "b", 3.0, "z", 4, 2)}
    cfgs = [
        {"name": "none", "algorithm": None, "draft": None, "steps": 0},
        {"name": "edsd", "algorithm": "EDSD", "draft": "d", "steps": 4},
    ]
    got = bench_tau.summarize(cfgs, prompts, {**none, **edsd}, ["gsm8k"])["edsd"]
    assert got["mean_tau"] == 1.5 and got["speedup"] == 1.0 and got["outputs_differing_from_none"] == 1
    alone = bench_tau.summarize(cfgs[1:], prompts, edsd, ["gsm8k"])["edsd"]
    assert alone["mean_tau"] == 1.5 and alone["tokens_per_s"] == 5.0
    assert alone["speedup"] is None and alone["outputs_differing_from_none"] is None


def test_tau_script_records_its_setup_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`bench_tau.py --summarize-only` starts no server: from a packed request log it writes the JSON
    with the harness's provenance (command, commit, SGLang version, hardware), the table and the
    plot, and leaves the log packed."""
    import bench_tau
    import sglang

    from sglang_edsd.data.append_log import append_records, pack

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    record = {"id": "g1", "task": "gsm8k", "source": "test", "turns": ["1 + 1?"], "reference": None}
    (prompts / "gsm8k.jsonl").write_text(json.dumps(record) + "\n")
    log = tmp_path / "tau.requests.jsonl"
    answer = {"id": "g1", "task": "gsm8k", "text": "2", "completion_tokens": 4, "client_cpu_s": 0.1}
    with log.open("a", encoding="utf-8") as out:
        append_records(out, [{"config": "none", **answer, "seconds": 2.0, "verify_ct": 0, "correct_drafts": 0}])
        append_records(out, [{"config": "edsd", **answer, "seconds": 1.0, "verify_ct": 2, "correct_drafts": 2}])
    pack(log)
    out = tmp_path / "tau.json"
    argv = ["bench_tau.py", "--prompts", str(prompts), "--out", str(out), "--model", str(tmp_path / "target")]
    argv += ["--edsd-draft", "d", "--tasks", "gsm8k", "--num-per-task", "1", "--sweep-depths", "--summarize-only"]
    monkeypatch.setattr(sys, "argv", argv)
    bench_tau.main()

    res = json.loads(out.read_text())
    assert res["benchmark"] == "tau" and "--summarize-only" in res["command"] and res["started"]
    assert re.fullmatch(r"[0-9a-f]{40}( \(dirty\))?", res["git_commit"]), res["git_commit"]
    assert res["sglang_version"] == sglang.__version__ and res["hardware"]["cpu_count"] >= 1 and res["hardware"]["cpu"]
    assert res["model"] == str(tmp_path / "target") and res["base_server_args"][:2] == ["--device", "cpu"]
    assert res["requests"] == "tau.requests.jsonl.gz" and res["complete"] is True
    assert res["configs"]["edsd"]["mean_tau"] == 2.0 and res["configs"]["edsd"]["speedup"] == 2.0
    assert out.with_suffix(".md").read_text().startswith("| config")
    assert out.with_suffix(".png").stat().st_size > 1000
    assert not log.exists() and log.with_name(log.name + ".gz").exists()


def test_vocab_coverage_scores_heldout_positions_whose_next_token_is_an_answer(
    smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`vocab_coverage.py` counts the target's top-1 at position j exactly when token j+1 is on the
    loss (the trainer's scored positions), and its coverage grows with the vocabulary to 1 at the
    full target vocabulary; the training counts stop at --max-length as the trainer's do."""
    import torch
    import vocab_coverage
    from transformers import AutoModelForCausalLM

    from sglang_edsd.draft_config import TargetInfo
    from tests.helpers import chat_ids

    ids = chat_ids(smollm2, "Name three colours, then count to five.")
    mask = [0] * len(ids)
    for j in (5, 6, 9, len(ids) - 1):
        mask[j] = 1
    sample = {"id": "h", "input_ids": ids, "loss_mask": mask}
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps(sample) + "\n")
    vocab = TargetInfo.from_path(smollm2).vocab_size

    counts = vocab_coverage.heldout_top1_counts(heldout, smollm2, 1024, vocab)
    model = AutoModelForCausalLM.from_pretrained(smollm2, torch_dtype=torch.float32)
    with torch.no_grad():
        top1 = model(torch.tensor([ids])).logits[0].argmax(-1)
    expected = torch.bincount(top1[torch.tensor([4, 5, 8, len(ids) - 2])], minlength=vocab)
    assert torch.equal(counts, expected)

    cut = vocab_coverage.count_loss_tokens(vocab_coverage.truncated(heldout, 7), vocab)
    assert int(cut.sum()) == 2 and int(cut[ids[5]]) >= 1 and int(cut[ids[6]]) >= 1

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({**sample, "id": "t", "loss_mask": [1] * len(ids)}) + "\n")
    out = tmp_path / "cov.json"
    draft = Path("sglang_edsd/drafts/smollm2-135m-instruct-edsd")
    argv = ["vocab_coverage.py", "--data", str(train), "--heldout", str(heldout), "--draft", str(draft)]
    argv += ["--target", str(smollm2), "--sizes", "8", "64", str(vocab), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    vocab_coverage.main()
    res = json.loads(out.read_text())
    cover = [r["heldout_top1_coverage"] for r in res["results"]]
    assert res["heldout_scored_positions"] == 4 and cover == sorted(cover) and cover[-1] == 1.0
    assert res["results"][-1]["train_token_coverage"] == 1.0 and res["benchmark"] == "vocab_coverage"
    assert [r["size"] for r in res["results"]] == [8, 64, vocab] and not any(r["same_as_draft"] for r in res["results"])
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 1000


def test_probe_reuse_reads_back_committed_scores_only_with_the_same_settings(tmp_path: Path):
    """`probe_drafts.py layers --reuse` maps a committed result back to its probes' run names (pairs
    and single layers) without their layer ids or EDSelect metrics, and refuses one trained with
    another budget, since a probe at another budget or lr does not compare."""
    import argparse

    import probe_drafts

    committed = json.loads((Path("benchmarks/results/smollm2-online/probes-layers.json")).read_text())
    args = argparse.Namespace(**committed["args"])
    score = {"agreement_per_step": [0.2, 0.1, 0.05, 0.02], "tau_proxy": 1.2}
    prev = {
        "args": committed["args"],
        "results": {
            "pairs": committed["results"]["pairs"],
            "singles": {"9": {"layer_ids": [9], **dict.fromkeys(probe_drafts.METRICS, 0.5), **score}},
        },
    }
    path = tmp_path / "probes-layers.json"
    path.write_text(json.dumps(prev))
    reused = probe_drafts.reused_probes(path, args)
    pairs = {f"pair-{a}-{b}" for a, b in (p["layer_ids"] for p in committed["results"]["pairs"].values())}
    assert set(reused) == pairs | {"single-9"} and reused["single-9"] == score
    edselect = committed["results"]["pairs"]["edselect"]
    a, b = edselect["layer_ids"]
    assert reused[f"pair-{a}-{b}"]["agreement_per_step"] == edselect["agreement_per_step"]

    args.budget += 1
    with pytest.raises(SystemExit, match="budget"):
        probe_drafts.reused_probes(path, args)


def test_paired_protocol_bookkeeping_without_a_server():
    """bench_cpu_path's summary: per-(prompt, round) ratios against hf and none, their median and
    bootstrap interval, mismatch counts; the rotation puts every configuration first equally often."""
    import bench_cpu_path
    from harness import paired_ratio

    rows = []
    for rnd in range(2):
        for i, prompt in enumerate(["p0", "p1", "p2"]):
            for config, tok_s in (("hf", 20.0), ("none", 10.0 + i), ("edsd-c3", 12.0 + i)):
                text = "same" if (config, prompt) != ("edsd-c3", "p2") or rnd else "other"
                rows.append(
                    {"round": rnd, "prompt": prompt, "task": "t", "config": config, "tokens": 100}
                    | {"seconds": 100 / tok_s, "text": text, "accept": 1.5 if config == "edsd-c3" else None}
                )
    summary = bench_cpu_path.summarise(rows, ["hf", "none", "edsd-c3"])
    ratios = [(12 + i) / (10 + i) for i in range(3)] * 2
    assert summary["edsd-c3"]["vs_none"] == pytest.approx(paired_ratio(ratios))
    assert summary["edsd-c3"]["vs_none"]["median"] == pytest.approx(13 / 11)
    assert summary["none"]["vs_hf"]["median"] == pytest.approx(11 / 20)
    assert summary["edsd-c3"]["mismatches_vs_none"] == 1
    assert summary["edsd-c3"]["mean_accept_length"] == 1.5 and summary["hf"]["text_differs_from_none"] == 0
    interval = summary["edsd-c3"]["vs_none"]
    assert interval["ci95_low"] <= interval["median"] <= interval["ci95_high"] and interval["n"] == 6
    with pytest.raises(ValueError, match="at least one"):
        paired_ratio([])


def test_paired_protocol_at_concurrency_pairs_groups_and_compares_stops_with_static_chains(tmp_path: Path):
    """At concurrency 2 the paired unit is a group timed as a whole (not its requests' own times);
    an entropy-stop configuration gets a ratio against every static chain, mismatches count per
    request; draft steps per round come from the phase windows' forward counts."""
    import bench_cpu_path

    speed = {"none": 10.0, "edsd-c3": 12.0, "edsd-c4": 11.0, "edsd-stop-c4": 13.2}
    rows = []
    for rnd in range(2):
        for g, group in enumerate([["p0", "p1"], ["p2", "p3"]]):
            for config, tok_s in speed.items():
                for prompt in group:
                    text = "other" if (config, prompt, rnd) == ("edsd-stop-c4", "p3", 1) else "same"
                    rows.append(
                        {"round": rnd, "prompt": prompt, "task": "t", "config": config, "tokens": 50, "text": text}
                        | {"seconds": 1.0, "accept": None, "group": g, "group_seconds": 100 / tok_s}
                    )
    summary = bench_cpu_path.summarise(rows, list(speed))
    stop = summary["edsd-stop-c4"]
    assert stop["units"] == 4 and stop["requests"] == 8 and stop["tokens_per_s"] == pytest.approx(13.2)
    assert stop["vs_edsd-c3"]["median"] == pytest.approx(1.1) and stop["vs_edsd-c4"]["median"] == pytest.approx(1.2)
    assert "vs_edsd-c3" not in summary["edsd-c4"] and stop["mismatches_vs_none"] == 1
    table = bench_cpu_path.report_speed(summary, tmp_path / "speed.png")
    assert "| edsd-stop-c4 | 1.100 [1.100, 1.100] | 1.200 [1.200, 1.200] |" in table
    windows = [
        {"unit": "round", "units": 100, "calls_per_unit": {"forward": 3.0, "verify": 1.0, "draft_extend": 1.0}},
        {"unit": "round", "units": 300, "calls_per_unit": {"forward": 4.0, "verify": 1.0, "draft_extend": 1.0}},
    ]
    assert bench_cpu_path.draft_steps_per_round(windows) == pytest.approx(1.75)
    assert bench_cpu_path.draft_steps_per_round([{"unit": "forward", "units": 100, "calls_per_unit": {}}]) is None


def test_cost_model_fits_profiled_chains_and_predicts_their_speed():
    import cost_model

    def window(depth, verify, extend, step, rest):
        ms = {"verify": verify, "draft_extend": extend, "draft_steps": step * (depth - 1)}
        return [{"unit": "round", "ms_per_unit": ms | {"round": verify + extend + step * (depth - 1) + rest}}]

    phases = {
        "windows": {
            "none": [{"unit": "forward", "ms_per_unit": {"forward": 50.0}}],
            "edsd-c3": window(3, 60.0 + 4 * 4.0, 6.0, 3.5, 10.0),
            "edsd-c4": window(4, 60.0 + 5 * 4.0, 6.0, 3.5, 10.0),
        }
    }
    step, parts = cost_model.chain_parts(phases)
    model = cost_model.fit(parts)
    assert step == 50.0
    assert model["verify_per_row"] == pytest.approx(4.0) and model["verify_at_0_rows"] == pytest.approx(60.0)
    assert model["draft_step"] == pytest.approx(3.5) and model["rest"] == pytest.approx(10.0)
    assert cost_model.predict_round(model, 3) == pytest.approx(parts[3]["round"])
    assert cost_model.predict_round(model, 1) == pytest.approx(60.0 + 8.0 + 6.0 + 10.0)
    with pytest.raises(SystemExit, match="at least two chain depths"):
        one_chain = {k: v for k, v in phases["windows"].items() if k != "edsd-c4"}
        cost_model.chain_parts({"windows": one_chain})


def test_stop_bound_prices_the_stop_with_and_without_cut_verify_rows():
    """Threshold 0 with rows cut is static depth 1, no stop is the full chain, and a stop that
    keeps its verify rows only saves the draft steps it skips."""
    import stop_bound

    model = {"verify_at_0_rows": 60.0, "verify_per_row": 4.0, "draft_extend": 6.0, "draft_step": 3.5, "rest": 10.0}
    candidates = [
        {"threshold": 0.0, "tokens_per_round": 1.4, "draft_steps": 0.0},
        {"threshold": 2.0, "tokens_per_round": 1.6, "draft_steps": 1.0},
        {"threshold": float("inf"), "tokens_per_round": 1.7, "draft_steps": 2.0},
    ]
    result = stop_bound.bound({"draft": "d", "steps": 3, "candidates": candidates}, model)
    zero, mid, full = result["candidates"]
    assert zero["rows_cut"]["vs_depth_1"] == pytest.approx(1.0)
    assert full["rows_fixed"]["vs_full_chain"] == pytest.approx(1.0)
    depth1 = 1.4 / (60.0 + 8.0 + 6.0 + 10.0)
    depth2, depth3 = 60.0 + 12.0 + 6.0 + 3.5 + 10.0, 60.0 + 16.0 + 6.0 + 7.0 + 10.0
    assert mid["rows_cut"]["vs_depth_1"] == pytest.approx(1.6 / depth2 / depth1)
    assert zero["rows_fixed"]["vs_depth_1"] == pytest.approx(1.4 / (depth3 - 2 * 3.5) / depth1)
    assert result["full_chain_vs_depth_1"] == pytest.approx(1.7 / depth3 / depth1)
    assert (
        result["best"]["rows_cut"]["threshold"]
        == max(result["candidates"], key=lambda c: c["rows_cut"]["vs_depth_1"])["threshold"]
    )
    with pytest.raises(SystemExit, match="no threshold 0 or inf"):
        stop_bound.bound({"draft": "d", "steps": 3, "candidates": candidates[1:]}, model)


def test_edtrain_scale_tiny_mode_trains_both_recipes_on_the_same_tokens(tmp_path: Path):
    """The scale benchmark's CPU mode: a random-weight target from a config, both recipes online
    on the same data, every time split present and consistent, the report files written."""
    import bench_edtrain_scale

    out = tmp_path / "scale.json"
    argv = ["--shape", "tiny", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench_edtrain_scale.main(argv) == 0
    result = json.loads(out.read_text())
    runs = {r["recipe"]: r for r in result["recipes"]}
    assert set(runs) == {"eagle3", "edsd"} and runs["eagle3"]["tokens"] == runs["edsd"]["tokens"] >= 3000
    assert runs["edsd"]["layer_ids"] == [1, 3] and runs["eagle3"]["layer_ids"] == [1, 3, 4]
    for r in runs.values():
        assert 0 < r["target_forward_seconds"] < r["loop_seconds"] <= r["loop_wall_seconds"] < r["wall_seconds"]
        assert 0 < r["target_forward_share"] < 1 and r["checkpoints"] >= 1
        assert sum(p["tokens"] for p in r["phases"]) == r["tokens"]
    assert [p["num_steps"] for p in runs["edsd"]["phases"]] == [1, 1, 2, 3, 4, 5, 6, 7]
    assert {p["num_steps"] for p in runs["eagle3"]["phases"]} == {7}
    assert result["edsd_over_eagle3_loop"] == round(runs["edsd"]["loop_seconds"] / runs["eagle3"]["loop_seconds"], 3)
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 0
