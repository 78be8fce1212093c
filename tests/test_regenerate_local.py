"""In-process batched regeneration (`regenerate --local`) on a tiny random Llama with SmolLM2's tokenizer.

Batching must not change what the target says: left-padded batches give the same greedy
answers as one conversation at a time, and those equal a plain argmax loop over the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sglang_edsd.assets import smollm2_path
from sglang_edsd.cli import main as cli
from sglang_edsd.data.regenerate_local import regenerate_local
from tests.synthetic import build_tiny_target

MAX_TOKENS = 12
CONVS = [
    {
        "id": "two-turns",
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "old answer"},
            {"role": "user", "content": "And another one, please?"},
        ],
    },
    *({"id": f"q{i}", "messages": [{"role": "user", "content": "word " * (3 * i + 1)}]} for i in range(5)),
]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_target(tmp_path_factory.mktemp("tiny-target"), smollm2_path())


def _data(tmp_path: Path, convs: list[dict]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in convs))
    return path


def _records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _greedy(target: Path, messages: list[dict]) -> str:
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(MAX_TOKENS):
            token = int(model(ids).logits[0, -1].argmax())
            if token == model.generation_config.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True)


def test_batched_answers_equal_one_at_a_time_and_a_plain_greedy_loop(target, tmp_path):
    data = _data(tmp_path, CONVS)
    batched, single = tmp_path / "batched.jsonl", tmp_path / "single.jsonl"
    stats = regenerate_local(
        data, batched, target, batch_size=4, max_tokens=MAX_TOKENS, progress=False, system_prompt="Sys."
    )
    assert stats == {"done": len(CONVS), "skipped_existing": 0, "failed": []}
    regenerate_local(data, single, target, batch_size=1, max_tokens=MAX_TOKENS, progress=False, system_prompt="Sys.")
    assert _records(batched) == _records(single)

    two = _records(batched)["two-turns"]
    first = [{"role": "system", "content": "Sys."}, CONVS[0]["messages"][0]]
    assert two["messages"][:2] == first and two["messages"][3] == CONVS[0]["messages"][2]
    assert two["messages"][2] == {"role": "assistant", "content": _greedy(target, first)}  # not "old answer"
    assert two["messages"][4] == {"role": "assistant", "content": _greedy(target, two["messages"][:4])}
    assert len(two["finish_reasons"]) == 2 and set(two["finish_reasons"]) <= {"stop", "length"}


def test_resume_skips_finished_ids_and_drops_a_torn_line(target, tmp_path):
    data, out = _data(tmp_path, CONVS), tmp_path / "out.jsonl"
    regenerate_local(data, out, target, batch_size=8, max_tokens=MAX_TOKENS, limit=2, progress=False)
    out.write_text(out.read_text() + '{"id": "q3", "mess')  # killed mid-write
    stats = regenerate_local(data, out, target, batch_size=8, max_tokens=MAX_TOKENS, progress=False)
    assert stats == {"done": len(CONVS) - 2, "skipped_existing": 2, "failed": []}
    assert sorted(_records(out)) == sorted(c["id"] for c in CONVS)


def test_a_prompt_too_long_for_the_context_fails_alone_and_the_cli_exits_1(target, tmp_path, capsys):
    convs = CONVS[1:3] + [{"id": "huge", "messages": [{"role": "user", "content": "word " * 2100}]}]
    data, out = _data(tmp_path, convs), tmp_path / "out.jsonl"
    assert (
        cli(
            [
                "regenerate",
                "--data",
                str(data),
                "--out",
                str(out),
                "--local",
                str(target),
                "--max-tokens",
                str(MAX_TOKENS),
                "--no-progress",
            ]
        )
        == 1
    )
    assert sorted(_records(out)) == ["q0", "q1"]
    err = capsys.readouterr().err
    assert "failed: huge:" in err and "exceeds the model's context of 2048" in err


def test_regenerate_needs_a_server_model_name_or_a_local_path(tmp_path, capsys):
    assert cli(["regenerate", "--data", str(_data(tmp_path, CONVS)), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "--model" in capsys.readouterr().err
