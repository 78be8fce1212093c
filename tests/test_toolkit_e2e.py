"""The drafter toolkit end to end on a tiny random target, with real SGLang at both ends.

tiny target served by SGLang -> `regenerate` answers through its OpenAI API -> `prepare`
-> `select` (EDSelect) -> `capture` -> `train` (EDTrain, 2 epochs) -> `export` -> the draft
served by SGLang with `--speculative-algorithm EDSD`: greedy output identical to the plain
server (float32), and every draft forward SGLang ran, replayed through the training
model, gives the same logits (the train/serve parity check).
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import torch
from safetensors.torch import load_file

from sglang_edsd.cli import main as cli
from sglang_edsd.draft_config import EDSDDraftConfig, validate_draft_folder
from sglang_edsd.edtrain.model import EDSDTrainDraft, TTTCache
from sglang_edsd.edtrain.target_head import TargetHead
from sglang_edsd.launcher import cpu_args, edsd_args, launch
from sglang_edsd.serving.draft_recorder import ENV_DIR
from tests.servers import LOG_DIR, start_all
from tests.synthetic import build_tiny_target

pytestmark = pytest.mark.server

QUESTIONS = [
    "Name a colour.",
    "Count to five.",
    "What is two plus two?",
    "Say hello in French.",
    "Give me a fruit.",
    "Describe the sky.",
    "Pick a number.",
    "Name an animal.",
    "What day comes after Monday?",
    "Spell cat.",
    "Tell me a word that rhymes with sun.",
    "Name a planet.",
]
EVAL_PROMPTS = ["Write a short poem about rain.", "List three tools.", "What is a river?"]
MAX_TOKENS = 32


def _chat(base_url: str, prompt: str) -> str:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=MAX_TOKENS
    )
    return r.choices[0].message.content


@pytest.fixture(scope="module")
def pipeline(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("toolkit")
    target = build_tiny_target(work / "target", smollm2)
    base = cpu_args("float32", max_total_tokens=4096)
    plain = start_all({"tiny-plain": (target, base)})["tiny-plain"]
    try:
        chats = work / "chats.jsonl"
        chats.write_text(
            "".join(
                json.dumps(
                    {"id": f"q{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": "old"}]}
                )
                + "\n"
                for i, q in enumerate(QUESTIONS)
            )
        )
        assert (
            cli(
                [
                    "regenerate",
                    "--data",
                    str(chats),
                    "--out",
                    str(work / "regen.jsonl"),
                    "--base-url",
                    f"{plain.base_url}/v1",
                    "--model",
                    "default",
                    "--concurrency",
                    "4",
                    "--max-tokens",
                    "48",
                ]
            )
            == 0
        )
        assert (
            cli(
                [
                    "prepare",
                    "--target",
                    str(target),
                    "--data",
                    str(work / "regen.jsonl"),
                    "--out",
                    str(work / "tokens.jsonl"),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert (
            cli(
                [
                    "select",
                    "--target",
                    str(target),
                    "--data",
                    str(work / "regen.jsonl"),
                    "--num-samples",
                    "12",
                    "--num-views",
                    "4",
                    "--out",
                    str(work / "edselect"),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert (
            cli(
                [
                    "capture",
                    "--target",
                    str(target),
                    "--data",
                    str(work / "tokens.jsonl"),
                    "--out",
                    str(work / "capture"),
                    "--layers-from",
                    str(work / "edselect" / "edselect.json"),
                    "--dtype",
                    "float32",
                    "--no-progress",
                ]
            )
            == 0
        )
        config = work / "train.json"
        config.write_text(json.dumps({"epochs": 2, "s_max": 3, "lr": 3e-3, "draft_vocab_size": 512}))
        assert (
            cli(
                [
                    "train",
                    "--config",
                    str(config),
                    "--capture",
                    str(work / "capture"),
                    "--out",
                    str(work / "run"),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert (
            cli(
                [
                    "export",
                    "--run",
                    str(work / "run"),
                    "--out",
                    str(work / "draft-f32"),
                    "--dtype",
                    "float32",
                    "--target",
                    str(target),
                ]
            )
            == 0
        )
        plain_answers = {p: _chat(plain.base_url, p) for p in EVAL_PROMPTS}
        regen_check = _chat(plain.base_url, QUESTIONS[0])
    finally:
        plain.stop()
    draft = work / "run" / "draft"
    records = work / "records"
    server = launch(target, base + edsd_args(draft), LOG_DIR / "tiny-edsd.log", env={ENV_DIR: str(records)})
    try:
        edsd_answers = {p: _chat(server.base_url, p) for p in EVAL_PROMPTS}
    finally:
        server.stop()
    yield {
        "work": work,
        "target": target,
        "draft": draft,
        "plain": plain_answers,
        "edsd": edsd_answers,
        "regen_check": regen_check,
        "records": records,
    }


def test_regenerated_answers_come_from_the_target(pipeline) -> None:
    rows = [json.loads(line) for line in (pipeline["work"] / "regen.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(len(QUESTIONS)))
    first = next(r for r in rows if r["id"] == "q0")
    assert first["messages"][-1]["role"] == "assistant" and first["messages"][-1]["content"] != "old"
    # temperature 0 with a shorter budget: the regenerated answer starts with the direct answer
    assert first["messages"][-1]["content"].startswith(pipeline["regen_check"])


def test_training_loss_falls(pipeline) -> None:
    history = [json.loads(line) for line in (pipeline["work"] / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["num_steps"] for h in history] == [1, 3]  # Step-n_t for T=2, S_max=3
    assert [h["mask_percent"] for h in history] == [3.0, 0.0]  # Mask-p_t for T=2, gamma=3
    assert history[1]["loss_per_step"][0] < history[0]["loss_per_step"][0]
    assert (pipeline["work"] / "run" / "curves.png").stat().st_size > 0


def test_export_is_a_valid_draft_both_ways(pipeline) -> None:
    for folder in (pipeline["draft"], pipeline["work"] / "draft-f32"):
        cfg = validate_draft_folder(folder, pipeline["target"])
        assert cfg.input_module == "edfuse" and cfg.draft_vocab_size == 512
    selected = json.loads((pipeline["work"] / "edselect" / "edselect.json").read_text())["selected_layer_ids"]
    assert list(cfg.layer_ids) == selected


def test_edsd_serving_of_the_trained_draft_is_lossless(pipeline) -> None:
    assert pipeline["edsd"] == pipeline["plain"]


def _replay_model(draft: Path) -> EDSDTrainDraft:
    cfg = EDSDDraftConfig.from_path(draft)
    model = EDSDTrainDraft(cfg)
    weights = load_file(str(draft / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in weights.items() if k not in ("d2t", "t2d")})
    return model.eval()


def _first_full_chain(records: list[dict]) -> list[dict]:
    """A fresh request's draft-extend (positions from 0) followed by its decode steps."""
    for i, rec in enumerate(records):
        if "EXTEND" in rec["mode"] and int(rec["positions"][0]) == 0 and rec["logits"].shape[0] == 1:
            chain = [rec]
            for nxt in records[i + 1 :]:
                if "EXTEND" in nxt["mode"] or nxt["input_ids"].shape[0] != 1:
                    break
                chain.append(nxt)
            if len(chain) == 4:
                return chain
    raise AssertionError(f"no single-request extend + 3 decode steps in {[r['mode'] for r in records[:12]]}")


def test_training_model_matches_sglang_draft_forward(pipeline) -> None:
    """Replay SGLang's draft forwards of one request (extend, then the decode steps) through
    the training model: same weights, same inputs -> same logits and fed-back hidden states."""
    records = [torch.load(f) for f in sorted(pipeline["records"].glob("*.pt"))]
    assert records, "the EDSD server recorded no draft forwards"
    extend, *decodes = _first_full_chain(records)
    model = _replay_model(pipeline["draft"])
    embed = TargetHead.load(pipeline["target"]).embed
    ids, pos = extend["input_ids"], extend["positions"]
    cache = TTTCache()
    with torch.no_grad():
        embeds = embed[ids]
        logits, aux = model.step(embeds, model.fuse(extend["hidden_in"], embeds), pos, cache)
        torch.testing.assert_close(logits[-1], extend["logits"][-1], atol=1e-4, rtol=1e-4)
        for k, rec in enumerate(decodes, start=1):
            assert rec["positions"].tolist() == [int(pos[-1]) + k]
            torch.testing.assert_close(rec["hidden_in"][-1], aux[-1], atol=1e-4, rtol=1e-4)
            # Every row takes this token; only the last row (the request's) is compared.
            tokens = torch.full_like(ids, int(rec["input_ids"][-1]))
            logits, aux = model.step(embed[tokens], aux, pos + k, cache)
            torch.testing.assert_close(logits[-1], rec["logits"][-1], atol=1e-4, rtol=1e-4)
