"""Offline capture on a tiny random Llama: stored features equal what transformers computes,
shards, resume after a crash, refusal to mix settings, reader, bytes/token, input errors. CPU."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sglang_edsd.capture import writer
from sglang_edsd.capture.command import (
    add_capture_arguments,
    capture_main,
    layer_ids_from_file,
)
from sglang_edsd.capture.layout import CaptureError, bytes_per_token, format_report
from sglang_edsd.capture.reader import CaptureReader
from sglang_edsd.capture.writer import capture

VOCAB, L, D = 1000, 4, 64
LENGTHS = [9, 14, 5, 30, 12, 7, 11]  # sample 3 is truncated to MAX_LEN
MAX_LEN = 24


def _make_target(path: Path, tie: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=D,
        intermediate_size=128,
        num_hidden_layers=L,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=tie,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _write_tokens(path: Path, lengths: list[int] = LENGTHS, seed: int = 0) -> Path:
    gen = torch.Generator().manual_seed(seed)
    with path.open("w") as f:
        for k, n in enumerate(lengths):
            ids = torch.randint(0, VOCAB, (n,), generator=gen).tolist()
            mask = [0] * (n // 3) + [1] * (n - n // 3)
            f.write(json.dumps({"id": f"s{k}", "input_ids": ids, "loss_mask": mask}) + "\n")
    return path


def _run(target: Path, tokens: Path, out: Path, **kw) -> dict:
    kw = {"max_length": MAX_LEN, "shard_tokens": 20, "dtype": "float32", "device": "cpu", "progress": False, **kw}
    return capture(target, tokens, out, kw.pop("layer_ids", [2, 0]), **kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("capture")
    target = _make_target(root / "target", tie=False)
    tokens = _write_tokens(root / "tokens.jsonl")
    stats = _run(target, tokens, root / "full")
    return {"root": root, "target": target, "tokens": tokens, "full": root / "full", "stats": stats}


def _contents(out: Path) -> list[dict]:
    reader = CaptureReader(out)
    return [reader[i] for i in range(len(reader))]


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["id"] == y["id"] and x["hidden"].keys() == y["hidden"].keys()
        for key in ("input_ids", "loss_mask", "entropy", "target_top1", "final_hidden"):
            assert torch.equal(x[key], y[key]), key
        for j in x["hidden"]:
            assert torch.equal(x["hidden"][j], y["hidden"][j])


def test_layout_and_shards(setup):
    out = setup["full"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["format_version"] == 1
    assert manifest["layer_ids"] == [0, 2] and manifest["hidden_size"] == D and manifest["storage_dtype"] == "float32"
    assert manifest["target"]["num_hidden_layers"] == L and manifest["max_length"] == MAX_LEN
    want = [min(n, MAX_LEN) for n in LENGTHS]
    assert manifest["num_samples"] == len(LENGTHS) and manifest["num_tokens"] == sum(want)
    shards = manifest["shards"]
    assert len(shards) > 2 and [i for s in shards for i in s["sample_ids"]] == [f"s{k}" for k in range(len(LENGTHS))]
    for s in shards[:-1]:  # closed once it reached shard_tokens, not before
        assert s["num_tokens"] >= 20 and s["num_tokens"] - s["sample_lengths"][-1] < 20
    with safe_open(str(out / shards[0]["file"]), framework="pt") as f:
        n, t = shards[0]["num_tokens"], {k: f.get_tensor(k) for k in f.keys()}
    assert set(t) == {
        "input_ids",
        "loss_mask",
        "entropy",
        "target_top1",
        "offsets",
        "final_hidden",
        "hidden.0",
        "hidden.2",
    }
    assert (t["input_ids"].dtype, t["loss_mask"].dtype, t["entropy"].dtype, t["target_top1"].dtype) == (
        torch.int32,
        torch.uint8,
        torch.float32,
        torch.int32,
    )
    assert t["offsets"].tolist() == [0, *torch.tensor(shards[0]["sample_lengths"]).cumsum(0).tolist()]
    assert t["final_hidden"].shape == t["hidden.2"].shape == (n, D) and t["entropy"].shape == (n,)
    stats = setup["stats"]
    assert stats["tokens"] == sum(want) and stats["bytes_per_token"] == 3 * D * 4 + 13
    assert (
        stats["eagle3_bytes_per_token"] == 4 * D * 4 + 13 and stats["disk_bytes_per_token"] > stats["bytes_per_token"]
    )


@pytest.mark.parametrize("tie", [False, True])
def test_features_match_transformers(setup, tie, tmp_path):
    from transformers import AutoModelForCausalLM

    target = setup["target"] if not tie else _make_target(tmp_path / "tied", tie=True)
    out = setup["full"] if not tie else tmp_path / "out"
    if tie:
        _run(target, setup["tokens"], out, layer_ids=[1], limit=3)
    reader = CaptureReader(out)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    lines = [json.loads(x) for x in setup["tokens"].read_text().splitlines()]
    for i in range(len(reader)):
        s = reader[i]
        ids = lines[i]["input_ids"][:MAX_LEN]
        assert s["id"] == lines[i]["id"] and s["input_ids"].tolist() == ids
        assert s["loss_mask"].tolist() == [bool(m) for m in lines[i]["loss_mask"][:MAX_LEN]]
        with torch.no_grad():
            res = model(torch.tensor([ids]), output_hidden_states=True)
            logits = res.logits[0].float()
            rebuilt = model.lm_head(model.model.norm(s["final_hidden"])).float()
        for j in reader.layer_ids:
            torch.testing.assert_close(s["hidden"][j], res.hidden_states[j + 1][0], rtol=0, atol=1e-6)
        assert not torch.allclose(s["final_hidden"], res.hidden_states[-1][0])  # pre-norm, unlike HF's last entry
        torch.testing.assert_close(rebuilt, logits, rtol=1e-5, atol=1e-5)
        logp = torch.log_softmax(logits, -1)
        torch.testing.assert_close(s["entropy"], -(logp.exp() * logp).sum(-1), rtol=1e-5, atol=1e-5)
        assert torch.equal(s["target_top1"], logits.argmax(-1))
        assert s["entropy"].dtype == torch.float32 and s["target_top1"].dtype == torch.int64


def test_packed_forward_features_equal_per_sample_ones(setup):
    """Online EDTrain's one forward per micro-batch (samples packed into one row, attention per
    sample) gives each sample the features of its own forward: positions restart, no sample
    attends to another (a leak would move every feature after the first sample far off)."""
    from sglang_edsd.capture.packed import packed_target_features, use_packed_attention

    model = writer.load_target_model(setup["target"], "cpu", "float32").eval()
    lines = [json.loads(x)["input_ids"][:MAX_LEN] for x in setup["tokens"].read_text().splitlines()]
    alone = [writer.run_target(model, ids, [0, 2], torch.float32) for ids in lines]
    use_packed_attention(model)
    packed = packed_target_features(model, [torch.tensor(ids) for ids in lines], [0, 2], torch.float32)
    assert [f["entropy"].shape[0] for f in packed] == [len(ids) for ids in lines]
    for one, many in zip(alone, packed):
        assert one.keys() == many.keys()
        assert torch.equal(one["target_top1"], many["target_top1"])
        for key in one.keys() - {"target_top1"}:
            torch.testing.assert_close(many[key], one[key], rtol=1e-5, atol=1e-5)
    reversed_order = packed_target_features(model, [torch.tensor(ids) for ids in lines[::-1]], [2], torch.float32)
    torch.testing.assert_close(reversed_order[-1]["hidden.2"], alone[0]["hidden.2"], rtol=1e-5, atol=1e-5)
    with pytest.raises(CaptureError, match="one or more non-empty samples"):
        packed_target_features(model, [], [2], torch.float32)


def test_bfloat16_storage(setup, tmp_path):
    _run(setup["target"], setup["tokens"], tmp_path, dtype="bfloat16", limit=2, layer_ids=[1])
    s, ref = CaptureReader(tmp_path)[1], CaptureReader(setup["full"])[1]
    assert s["final_hidden"].dtype == s["hidden"][1].dtype == torch.bfloat16
    torch.testing.assert_close(s["final_hidden"], ref["final_hidden"].bfloat16())
    assert torch.equal(s["entropy"], ref["entropy"])


@pytest.mark.parametrize(
    "ids, msg",
    [
        ([3], "layer id 3 is out of range for a target with L=4"),
        ([-1], "layer id -1 is out of range"),
        ([1, 0, 1], "duplicates [1]"),
        ([], "empty"),
    ],
)
def test_bad_layer_ids(setup, tmp_path, ids, msg):
    with pytest.raises(CaptureError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        _run(setup["target"], setup["tokens"], tmp_path, layer_ids=ids)


def test_resume_after_crash_equals_uninterrupted(setup, tmp_path, monkeypatch):
    real, calls = writer._write_shard, []

    def crash_after_first(*args):
        if calls:
            raise RuntimeError("simulated crash")
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(writer, "_write_shard", crash_after_first)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(setup["target"], setup["tokens"], tmp_path)
    monkeypatch.setattr(writer, "_write_shard", real)
    partial = json.loads((tmp_path / "manifest.json").read_text())
    assert not partial["complete"] and len(partial["shards"]) == 1
    with pytest.raises(CaptureError, match="incomplete"):
        CaptureReader(tmp_path)
    assert len(CaptureReader(tmp_path, allow_partial=True)) == partial["num_samples"]
    stats = _run(setup["target"], setup["tokens"], tmp_path)
    assert stats["new_tokens"] == setup["stats"]["tokens"] - partial["num_tokens"]
    _assert_same(_contents(tmp_path), _contents(setup["full"]))
    mtimes = [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("shard-*"))]
    again = _run(setup["target"], setup["tokens"], tmp_path)  # finished: a no-op returning the stats
    assert again["new_tokens"] == 0 and again["tokens"] == stats["tokens"]
    assert mtimes == [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("shard-*"))]


def test_limit_then_extend(setup, tmp_path):
    assert _run(setup["target"], setup["tokens"], tmp_path, limit=3)["samples"] == 3
    assert len(CaptureReader(tmp_path)) == 3
    with pytest.raises(CaptureError, match="already holds 3 samples"):
        _run(setup["target"], setup["tokens"], tmp_path, limit=2)
    _run(setup["target"], setup["tokens"], tmp_path)
    _assert_same(_contents(tmp_path), _contents(setup["full"]))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"layer_ids": [0, 1]}, "layer_ids"),
        ({"max_length": 16}, "max_length"),
        ({"dtype": "bfloat16"}, "storage_dtype"),
        ({"tokens": "other"}, "tokens file content"),
        ({"target": "copy"}, "target_path"),
    ],
)
def test_mismatched_rerun_refused(setup, tmp_path, change, field):
    out = tmp_path / "out"
    shutil.copytree(setup["full"], out)
    target, tokens = setup["target"], setup["tokens"]
    if change.pop("tokens", None):
        tokens = _write_tokens(tmp_path / "other.jsonl", seed=1)
    if change.pop("target", None):
        target = shutil.copytree(target, tmp_path / "target")
    with pytest.raises(CaptureError, match=f"different {field}"):
        _run(target, tokens, out, **change)


def test_reader_layer_selection(setup):
    reader = CaptureReader(setup["full"], layers=[2])
    assert reader.layer_ids == [2] and list(reader[0]["hidden"]) == [2] and reader.hidden_size == D
    assert reader.lengths == [min(n, MAX_LEN) for n in LENGTHS] and reader.sample_ids[-1] == f"s{len(LENGTHS) - 1}"
    assert reader.target.num_hidden_layers == L and torch.equal(
        reader[-1]["entropy"], reader[len(reader) - 1]["entropy"]
    )
    with pytest.raises(CaptureError, match=r"layer ids \[1\] were not captured.*captured: \[0, 2\]"):
        CaptureReader(setup["full"], layers=[1, 2])
    with pytest.raises(CaptureError, match="manifest.json is missing"):
        CaptureReader(setup["root"])
    with pytest.raises(IndexError):
        reader[len(reader)]


def test_bytes_per_token_matches_paper_a3():
    edsd, eagle3 = bytes_per_token(576, 2, "bfloat16"), bytes_per_token(576, 3, "bfloat16")
    assert (edsd, eagle3) == (3 * 576 * 2 + 13, 4 * 576 * 2 + 13)
    assert 0.24 < 1 - edsd / eagle3 < 0.26  # "reducing the offline storage requirement by approximately 25%"
    report = format_report(576, [0, 26], "bfloat16", 3480.5)
    assert "3469" in report and "4621" in report and "-24.9%" in report and "3480.5" in report


@pytest.mark.parametrize(
    "line, msg",
    [
        ("not json", "invalid JSON"),
        ('{"id": "a", "input_ids": [1, 2], "loss_mask": [1]}', "as long as input_ids"),
        (
            f'{{"id": "a", "input_ids": [1, {VOCAB}], "loss_mask": [1, 1]}}',
            f"input_ids\\[1\\] = {VOCAB} is not a token id",
        ),
        ('{"id": "a", "input_ids": [1, 2.5], "loss_mask": [1, 1]}', "input_ids\\[1\\] = 2.5"),
        ('{"id": "a", "input_ids": [1, 2], "loss_mask": [1, 2]}', "loss_mask\\[1\\] = 2 is not 0 or 1"),
        ('{"input_ids": [1], "loss_mask": [1]}', "'id' must be a string"),
        ('{"id": "s0", "input_ids": [1], "loss_mask": [1]}', "duplicate id 's0' \\(first on line 1\\)"),
        ('{"id": "a", "input_ids": [], "loss_mask": []}', "non-empty list"),
    ],
)
def test_malformed_tokens_name_file_and_line(setup, tmp_path, line, msg):
    bad = _write_tokens(tmp_path / "bad.jsonl", lengths=[3, 4])
    bad.write_text(bad.read_text() + "\n" + line + "\n")  # a blank line 3 still counts
    with pytest.raises(CaptureError, match=f"{re.escape(str(bad))}:4: .*{msg}"):
        _run(setup["target"], bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # rejected before anything is written


def test_command(setup, tmp_path, capsys):
    (tmp_path / "edselect.json").write_text(json.dumps({"selected_layer_ids": [1, 2]}))
    (tmp_path / "draft").mkdir()
    (tmp_path / "draft" / "config.json").write_text(
        json.dumps({"eagle_config": {"eagle_aux_hidden_state_layer_ids": [0, 2]}})
    )
    assert layer_ids_from_file(tmp_path) == [1, 2] and layer_ids_from_file(tmp_path / "draft") == [0, 2]
    parser = add_capture_arguments(argparse.ArgumentParser())
    base = [
        "--target",
        str(setup["target"]),
        "--data",
        str(setup["tokens"]),
        "--out",
        str(tmp_path / "out"),
        "--limit",
        "2",
        "--dtype",
        "float32",
        "--no-progress",
    ]
    assert (
        capture_main(
            parser.parse_args(base + ["--layers-from", str(tmp_path / "edselect.json"), "--with-eagle3-layers"])
        )
        == 0
    )
    assert "vs EAGLE-3" in capsys.readouterr().out
    assert CaptureReader(tmp_path / "out").layer_ids == [0, 1, 2]  # EAGLE-3 ids for L=4 are {1, 0}
    with pytest.raises(CaptureError):
        capture_main(parser.parse_args(base + ["--layer-ids", "0", "2"]))


def test_no_sglang_import():
    code = (
        "import sys, sglang_edsd.capture as c; c.capture, c.CaptureReader, c.capture_main; "
        "assert not any(m == 'sglang' or m.startswith('sglang.') for m in sys.modules), 'sglang imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
