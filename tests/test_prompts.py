"""Benchmark prompt sets (real files from PyPI archives, cached) and the contamination check."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sglang_edsd.prompts import (
    ALL_TASKS,
    PromptError,
    build_prompt_sets,
    filter_contaminated,
    find_contamination,
    gsm8k_final_answer,
    load_prompts,
    load_user_prompts,
    normalise,
)
from sglang_edsd.prompts.command import (
    add_decontaminate_arguments,
    add_prompts_arguments,
    decontaminate_main,
    prompts_main,
)
from sglang_edsd.prompts.sources import (
    ALPACA_MEMBER,
    C4_MIN_CHARS,
    LLAMAFACTORY,
    SUMMARY_MAX_CHARS,
    read_member,
)


@pytest.fixture(scope="module")
def prompt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prompts")
    paths = build_prompt_sets(out)
    assert sorted(paths) == sorted(ALL_TASKS) and all(p == out / f"{t}.jsonl" for t, p in paths.items())
    return out


@pytest.fixture(scope="module")
def sets(prompt_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {t: load_prompts(prompt_dir / f"{t}.jsonl") for t in ALL_TASKS}


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_counts_and_record_format(sets: dict[str, list[dict[str, Any]]]) -> None:
    alpaca_items = len(json.loads(read_member(*LLAMAFACTORY, ALPACA_MEMBER)))
    expected = {"mt_bench": 80, "humaneval": 164, "gsm8k": 1319, "alpaca": alpaca_items, "summarization": 154}
    assert {t: len(r) for t, r in sets.items()} == expected
    for task, records in sets.items():
        assert [r["id"] for r in records] == [f"{task}-{n}" for n in range(len(records))]
        for r in records:
            assert r["task"] == task and "==" in r["source"] and ":" in r["source"]
            assert r["turns"] and all(isinstance(t, str) and t.strip() for t in r["turns"])
    assert all(len(r["turns"]) == 2 for r in sets["mt_bench"])
    assert all(len(r["turns"]) == 1 for t in ALL_TASKS if t != "mt_bench" for r in sets[t])


def test_references(sets: dict[str, list[dict[str, Any]]]) -> None:
    mt = [r for r in sets["mt_bench"] if r["reference"] is not None]
    assert mt and all(len(r["reference"]) == 2 for r in mt)  # FastChat's per-turn references
    assert {r["meta"]["category"] for r in mt} >= {"math", "reasoning", "coding"}
    for r in sets["humaneval"]:
        ref = r["reference"]
        assert ref["entry_point"] in r["turns"][0] and "def check(" in ref["test"]
    for r in sets["gsm8k"]:
        final = r["reference"]["final_answer"]
        assert isinstance(final, int) and not isinstance(final, bool)  # all test answers are integers
        assert r["reference"]["answer"].rpartition("####")[2].strip().replace(",", "") == str(final)
    assert sets["gsm8k"][0]["reference"]["final_answer"] == 18
    assert all(isinstance(r["reference"], str) and r["reference"] for r in sets["alpaca"])
    assert all(r["reference"] is None for r in sets["summarization"])


def test_gsm8k_final_answer() -> None:
    assert gsm8k_final_answer("so 3 * 400 = 1,200\n#### 1,200") == 1200
    assert gsm8k_final_answer("#### -7") == -7 and gsm8k_final_answer("#### 2.5") == 2.5
    with pytest.raises(PromptError, match="no number"):
        gsm8k_final_answer("the answer is 4")


def test_alpaca_and_summarization_prompts(sets: dict[str, list[dict[str, Any]]]) -> None:
    raw = json.loads(read_member(*LLAMAFACTORY, ALPACA_MEMBER))
    with_input = next(n for n, r in enumerate(raw) if r["input"])
    assert sets["alpaca"][with_input]["turns"] == [f"{raw[with_input]['instruction']}\n\n{raw[with_input]['input']}"]
    for r in sets["summarization"]:
        assert r["turns"][0].startswith("Summarize the following article in three sentences:\n\n")
        meta = r["meta"]
        assert meta["kept_chars"] <= SUMMARY_MAX_CHARS == meta["max_chars"]
        assert meta["truncated"] == (meta["article_chars"] > meta["kept_chars"])
    assert sum(r["meta"]["truncated"] for r in sets["summarization"]) > 20
    corpora = [r["meta"]["corpus"] for r in sets["summarization"]]
    assert corpora == ["wikipedia"] * 30 + ["c4"] * 124  # wiki first: ids of the first 30 never moved
    assert all(r["meta"]["article_chars"] >= C4_MIN_CHARS for r in sets["summarization"][30:])


def test_subsets_are_deterministic(tmp_path: Path, sets: dict[str, list[dict[str, Any]]]) -> None:
    a = build_prompt_sets(tmp_path / "a", ["gsm8k", "mt_bench"], num_per_task=10, seed=0)
    b = build_prompt_sets(tmp_path / "b", ["gsm8k", "mt_bench"], num_per_task=10, seed=0)
    small = build_prompt_sets(tmp_path / "c", ["gsm8k"], num_per_task=4, seed=0)
    other = build_prompt_sets(tmp_path / "d", ["gsm8k"], num_per_task=10, seed=1)
    assert a["gsm8k"].read_text() == b["gsm8k"].read_text() and a["mt_bench"].read_text() == b["mt_bench"].read_text()
    ids = [r["id"] for r in load_prompts(a["gsm8k"])]
    assert len(ids) == 10 and ids == sorted(ids, key=lambda i: int(i.split("-")[1]))  # source order
    assert {r["id"] for r in load_prompts(small["gsm8k"])} < set(ids)
    assert {r["id"] for r in load_prompts(other["gsm8k"])} != set(ids)
    by_id = {r["id"]: r for r in sets["gsm8k"]}
    assert all(r == by_id[r["id"]] for r in load_prompts(a["gsm8k"]))
    with pytest.raises(PromptError, match="unknown task"):
        build_prompt_sets(tmp_path / "e", ["cnn_dm"])


def test_user_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"prompt": "What is 2+2?", "reference": "4"},
            {"id": "two-turn", "turns": ["Hello", "Tell me more"]},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
                ]
            },
            "",
        ],
    )
    records = load_user_prompts(path, "mine")
    assert [r["id"] for r in records] == ["mine-0", "two-turn", "mine-2"]
    assert records[0]["turns"] == ["What is 2+2?"] and records[0]["reference"] == "4"
    assert records[2]["turns"] == ["Hi", "Bye"] and records[2]["system"] == "Be brief."
    assert records[2]["reference"] == ["Hello!"] and records[1]["reference"] is None
    assert all(r["task"] == "mine" and r["source"] == str(path) for r in records)
    mapped = _write_jsonl(tmp_path / "qa.jsonl", [{"q": "Why?", "a": "Because."}])
    assert load_user_prompts(mapped, "qa", {"prompt": "q", "reference": "a"})[0]["reference"] == "Because."


def test_user_hf_dataset(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"question": ["Q1", "Q2", "Q3"], "answer": ["A1", "A2", "A3"]})
    ds.save_to_disk(str(tmp_path / "single"))
    records = load_user_prompts(tmp_path / "single", "hf", {"prompt": "question", "reference": "answer"})
    assert [(r["id"], r["turns"], r["reference"]) for r in records] == [
        ("hf-0", ["Q1"], "A1"),
        ("hf-1", ["Q2"], "A2"),
        ("hf-2", ["Q3"], "A3"),
    ]
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(PromptError, match="splits"):
        load_user_prompts(tmp_path / "dict", "hf", {"prompt": "question"})
    assert len(load_user_prompts(tmp_path / "dict", "hf", {"prompt": "question"}, split="test")) == 1
    with pytest.raises(PromptError, match=r"mapped column\(s\) \['prompt_text'\] missing"):
        load_user_prompts(tmp_path / "single", "hf", {"prompt": "prompt_text"})
    with pytest.raises(PromptError, match="not a Hugging Face dataset folder"):
        load_user_prompts(tmp_path, "hf")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "ok"', "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"text": "no prompt field"}', "none of 'turns', 'prompt', 'messages'"),
        ('{"turns": []}', "non-empty list of non-empty strings"),
        ('{"prompt": "   "}', "non-empty string"),
        ('{"messages": [{"role": "assistant", "content": "hi"}]}', "no user message"),
        ('{"messages": [{"role": "user"}]}', "string content"),
        ('{"id": "first", "prompt": "again"}', "duplicate id 'first'"),
    ],
)
def test_malformed_user_input(tmp_path: Path, line: str, message: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", ['{"id": "first", "prompt": "fine"}', line])
    with pytest.raises(PromptError, match=message) as e:
        load_user_prompts(path, "bad")
    assert f"{path}:2" in str(e.value)


def test_malformed_prompt_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": "x-0", "task": "x", "turns": ["hi"], "source": "s"}])
    with pytest.raises(PromptError, match=f"{path}:1: 'reference' is missing"):
        load_prompts(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptError, match="no \\*.jsonl"):
        load_prompts(tmp_path / "empty")
    with pytest.raises(PromptError, match="unknown field"):
        load_user_prompts(path, "x", {"question": "q"})


def _conv(cid: str, *user: str, sharegpt: bool = True, reply: str = "Sure.") -> dict[str, Any]:
    if sharegpt:
        turns = [t for u in user for t in ({"from": "human", "value": u}, {"from": "gpt", "value": reply})]
        return {"id": cid, "conversations": turns}
    return {
        "id": cid,
        "messages": [
            t for u in user for t in ({"role": "user", "content": u}, {"role": "assistant", "content": reply})
        ],
    }


@pytest.fixture(scope="module")
def eval_records(sets: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    short = {"id": "mine-0", "task": "mine", "turns": ["Hi there!"], "reference": None, "source": "test"}
    return [r for t in ALL_TASKS for r in sets[t]] + [short]


def _training_file(path: Path, sets: dict[str, list[dict[str, Any]]]) -> Path:
    gsm = sets["gsm8k"][7]["turns"][0]
    words = sets["summarization"][3]["turns"][0].split()
    paraphrase = " ".join(words[: int(len(words) * 0.7)]) + " and then something else entirely was written here."
    return _write_jsonl(
        path,
        [
            _conv("clean-1", "How do I sort a list in Python?", "And in reverse?"),
            _conv("verbatim", "Hello!", f"Please solve this:\n{gsm.upper()}\nThanks a lot."),
            _conv("paraphrase", paraphrase, sharegpt=False),
            _conv("short-exact", "  hi   THERE! "),
            _conv("short-inside", "Hi there! Can you help me plan a trip to the mountains next week?"),
            _conv("assistant-only", "Tell me a story.", reply=gsm),
            {"id": "empty", "conversations": []},
            _conv("clean-2", "Write a poem about the sea.", sharegpt=False),
        ],
    )


def test_contamination_found_and_filtered(
    tmp_path: Path, sets: dict[str, list[dict[str, Any]]], eval_records: list[dict[str, Any]]
) -> None:
    train = _training_file(tmp_path / "train.jsonl", sets)
    matches = find_contamination(train, eval_records)
    found = {(m["train_id"], m["prompt_id"], m["kind"]) for m in matches}
    assert found == {
        ("verbatim", "gsm8k-7", "verbatim"),
        ("paraphrase", "summarization-3", "overlap"),
        ("short-exact", "mine-0", "exact"),
    }
    para = next(m for m in matches if m["kind"] == "overlap")
    assert 0.5 <= para["overlap"] < 1 and len(para["matched_text"].split()) > 100
    assert para["train_line"] == 3 and para["train_turn"] == 0 and para["task"] == "summarization"
    verbatim = next(m for m in matches if m["kind"] == "verbatim")
    assert verbatim["train_turn"] == 2 and verbatim["matched_text"] == normalise(sets["gsm8k"][7]["turns"][0])

    out = tmp_path / "clean.jsonl"
    stats = filter_contaminated(train, out, eval_records)
    assert (stats["total"], stats["removed"], stats["kept"]) == (8, 3, 5)
    assert sorted(stats["removed_ids"]) == ["paraphrase", "short-exact", "verbatim"]
    assert stats["conversations_by_task"] == {"gsm8k": 1, "mine": 1, "summarization": 1}
    kept = train.read_text().splitlines()
    assert out.read_text().splitlines() == [kept[i] for i in (0, 4, 5, 6, 7)]  # byte for byte
    assert json.loads(Path(stats["report"]).read_text())["num_matches"] == 3
    assert find_contamination(out, eval_records) == []
    with pytest.raises(PromptError, match="must differ"):
        filter_contaminated(train, train, eval_records)


def test_contamination_bad_training_file(tmp_path: Path, eval_records: list[dict[str, Any]]) -> None:
    for line, message in [
        ("{oops", "not valid JSON"),
        ('{"text": "x"}', "'conversations' or 'messages' list"),
        ('{"conversations": [{"from": "human"}]}', "string content"),
    ]:
        path = _write_jsonl(tmp_path / "t.jsonl", [_conv("a", "hello"), line])
        with pytest.raises(PromptError, match=message) as e:
            find_contamination(path, eval_records)
        assert f"{path}:2" in str(e.value)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"conversations": [{"from": "human", "value": "caf\xe9"}]}\n')
    with pytest.raises(PromptError, match="not a UTF-8 text file"):
        find_contamination(tmp_path / "latin1.jsonl", eval_records)


def test_contamination_scales(tmp_path: Path, eval_records: list[dict[str, Any]]) -> None:
    """~18k conversations x ~2.6k evaluation turns, well under a minute on one core."""
    vocab = [f"w{i}" for i in range(5000)]
    rows = [
        _conv(
            f"c{n}",
            " ".join(vocab[(n * 7 + k * 13) % 5000] for k in range(150)),
            " ".join(vocab[(n * 11 + k) % 5000] for k in range(60)),
        )
        for n in range(18000)
    ]
    rows[9000] = _conv("leak", "please answer: " + eval_records[2000]["turns"][0])
    train = _write_jsonl(tmp_path / "big.jsonl", rows)
    start = time.perf_counter()
    matches = find_contamination(train, eval_records)
    assert time.perf_counter() - start < 45
    assert [(m["train_id"], m["prompt_id"]) for m in matches] == [("leak", eval_records[2000]["id"])]


def test_commands(tmp_path: Path, sets: dict[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_prompts_arguments(parser)
    assert (
        prompts_main(
            parser.parse_args(["--out", str(tmp_path / "p"), "--tasks", "gsm8k", "humaneval", "--num-per-task", "3"])
        )
        == 0
    )
    assert "gsm8k: 3 prompts" in capsys.readouterr().out
    user = _write_jsonl(tmp_path / "u.jsonl", [{"question": "Q?", "answer": "A."}] * 2)
    assert (
        prompts_main(
            parser.parse_args(
                [
                    "--out",
                    str(tmp_path / "p"),
                    "--from-file",
                    str(user),
                    "--task-name",
                    "mine",
                    "--column",
                    "prompt=question",
                ]
            )
        )
        == 0
    )
    assert [r["task"] for r in load_prompts(tmp_path / "p")] == ["gsm8k"] * 3 + ["humaneval"] * 3 + ["mine"] * 2
    for bad in (
        ["--from-file", str(user)],
        ["--task-name", "x"],
        ["--from-file", str(user), "--task-name", "m", "--column", "prompt"],
    ):
        with pytest.raises(PromptError):
            prompts_main(parser.parse_args(["--out", str(tmp_path / "q"), *bad]))

    decon = argparse.ArgumentParser()
    add_decontaminate_arguments(decon)
    train = _write_jsonl(
        tmp_path / "t.jsonl", [_conv("ok", "hello there, how are you?"), _conv("bad", sets["humaneval"][5]["turns"][0])]
    )
    prompt_dir = tmp_path / "he"
    build_prompt_sets(prompt_dir, ["humaneval"])
    assert (
        decontaminate_main(
            decon.parse_args(["--data", str(train), "--prompts", str(prompt_dir), "--out", str(tmp_path / "c.jsonl")])
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "removed 1 (by task: humaneval 1), kept 1" in out and "humaneval-5 [verbatim" in out
    with pytest.raises(PromptError, match="training file not found"):
        decontaminate_main(
            decon.parse_args(
                [
                    "--data",
                    str(tmp_path / "missing.jsonl"),
                    "--prompts",
                    str(prompt_dir),
                    "--out",
                    str(tmp_path / "c.jsonl"),
                ]
            )
        )


def test_shipped_drafts_training_data_holds_no_evaluation_prompt(prompt_dir: Path, tmp_path: Path) -> None:
    """The committed regenerated data the SmolLM2 drafts were trained on, checked against every
    evaluation prompt (the benchmark's tau would otherwise measure memorisation)."""
    import gzip

    shipped = Path(__file__).parent.parent / "sglang_edsd/drafts/inputs/regen-smollm2-sharegpt192.jsonl.gz"
    data = tmp_path / "regen.jsonl"
    data.write_bytes(gzip.decompress(shipped.read_bytes()))
    assert len(data.read_text().splitlines()) == 192
    assert find_contamination(data, load_prompts(prompt_dir)) == []
