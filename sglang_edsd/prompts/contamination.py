"""Mechanical check that no evaluation prompt leaked into drafter training data.

A draft trained on the benchmark prompts would show inflated accept lengths on them, so
training conversations that contain an evaluation turn are found and can be removed.
Texts are normalised (lower case, whitespace collapsed); only the training data's user turns
are searched. An evaluation turn matches a training user turn when

- ``exact``: it is shorter than `min_chars` and equals the whole training turn;
- ``verbatim``: it occurs inside the training turn as a run of whole words;
- ``overlap``: at least half of its distinct 13-word shingles occur in the training turn.

Evaluation turns are indexed (whole text, first words, shingles) in dicts, and each training
turn is looked up once, so the cost grows with the data size, not data x prompts.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglang_edsd.files import atomic_path
from sglang_edsd.prompts.sources import USER_ROLES, PromptError, message_text

SHINGLE_WORDS = 13
OVERLAP_FRACTION = 0.5
ANCHOR_WORDS = 4
_KIND_RANK = {"exact": 2, "verbatim": 2, "overlap": 1}


def normalise(text: str) -> str:
    """Lower case, every whitespace run -> one space, stripped."""
    return " ".join(text.lower().split())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return set(zip(*(words[i:] for i in range(n))))


@dataclass
class _EvalTurn:
    prompt_id: str
    task: str
    turn: int
    text: str
    norm: str
    shingles: list[tuple[str, ...]]  # in text order, repeats kept
    distinct: int


class _PromptIndex:
    """Dict indexes over the evaluation turns, one per matching rule."""

    def __init__(self, prompt_records: Iterable[dict[str, Any]], min_chars: int) -> None:
        self.turns: list[_EvalTurn] = []
        self.exact: dict[str, list[int]] = defaultdict(list)
        self.anchors: dict[int, dict[tuple[str, ...], list[int]]] = defaultdict(lambda: defaultdict(list))
        self.shingles: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for record in prompt_records:
            for j, text in enumerate(record["turns"]):
                norm = normalise(text)
                if not norm:
                    continue
                words = norm.split()
                k = len(self.turns)
                shingles = list(zip(*(words[i:] for i in range(SHINGLE_WORDS))))
                self.turns.append(_EvalTurn(record["id"], record["task"], j, text, norm, shingles, len(set(shingles))))
                if len(norm) < min_chars:
                    self.exact[norm].append(k)
                elif not shingles:
                    n = min(len(words), ANCHOR_WORDS)
                    self.anchors[n][tuple(words[:n])].append(k)
                for s in dict.fromkeys(shingles):
                    self.shingles[s].append(k)
        self.shingle_keys = frozenset(self.shingles)

    def _contains(self, k: int, padded: str) -> bool:
        return f" {self.turns[k].norm} " in padded

    def match(self, text: str) -> dict[int, tuple[str, float, str]]:
        """{eval turn index: (kind, shingle fraction, matched normalised text)} for one training turn."""
        norm = normalise(text)
        words, padded = norm.split(), f" {norm} "
        found: dict[int, tuple[str, float, str]] = {}
        for k in self.exact.get(norm, ()):
            found[k] = ("exact", 1.0, norm)
        for n, table in self.anchors.items():
            for gram in _ngrams(words, n):
                for k in table.get(gram, ()):
                    if self._contains(k, padded):
                        found[k] = ("verbatim", 1.0, self.turns[k].norm)
        hits = _ngrams(words, SHINGLE_WORDS) & self.shingle_keys if len(words) >= SHINGLE_WORDS else set()
        counts = Counter(k for s in hits for k in self.shingles[s])
        for k, c in counts.items():
            frac = c / self.turns[k].distinct
            if frac >= OVERLAP_FRACTION:
                if self._contains(k, padded):
                    found[k] = ("verbatim", 1.0, self.turns[k].norm)
                else:
                    found[k] = ("overlap", round(frac, 3), self._longest_run(k, hits))
        return found

    def _longest_run(self, k: int, hits: set[tuple[str, ...]]) -> str:
        """The longest stretch of the eval turn made of consecutive shared shingles."""
        shingles = self.turns[k].shingles
        start, length, run = 0, 0, 0
        for p, s in enumerate(shingles):
            run = run + 1 if s in hits else 0
            if run > length:
                start, length = p - run + 1, run
        return " ".join([*shingles[start], *(s[-1] for s in shingles[start + 1 : start + length])])


def _training_records(path: Path) -> Iterator[tuple[int, str, list[tuple[int, str]], str]]:
    """(line number, conversation id, [(turn index, user text)], raw line) per training conversation."""
    if not path.is_file():
        raise PromptError(f"training file not found: {path}")
    with path.open(encoding="utf-8") as f:
        try:
            yield from _parse_training_lines(path, f)
        except UnicodeDecodeError:
            raise PromptError(f"{path}: not a UTF-8 text file") from None


def _parse_training_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, str, list[tuple[int, str]], str]]:
    """Parse the non-blank lines of a training jsonl (see _training_records)."""
    for index, (line_no, line) in enumerate((n, x) for n, x in enumerate(lines, start=1) if x.strip()):
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise PromptError(f"{where}: expected a JSON object, got {type(record).__name__}")
        key = "messages" if record.get("messages") is not None else "conversations"
        turns = record.get(key)
        if not isinstance(turns, list):
            raise PromptError(
                f"{where}: record needs a 'conversations' or 'messages' list (keys: {sorted(record)[:8]})"
            )
        user = []
        for k, turn in enumerate(turns):
            role, text = message_text(turn, f"{where}: turn {k}")
            if role in USER_ROLES:
                user.append((k, text))
        rid = record.get("id")
        yield line_no, (f"{path.stem}-{index}" if rid is None else str(rid)), user, line


def find_contamination(
    train_jsonl_paths: str | Path | Iterable[str | Path], prompt_records: Iterable[dict[str, Any]], min_chars: int = 40
) -> list[dict[str, Any]]:
    """Every (training conversation, evaluation turn) pair that matches, strongest match per pair.

    Each match: train_file, train_line, train_id, train_turn, prompt_id, task, prompt_turn,
    kind (exact | verbatim | overlap), overlap (shingle fraction), matched_text (normalised),
    prompt_text (the evaluation turn as written).
    """
    paths = [train_jsonl_paths] if isinstance(train_jsonl_paths, (str, Path)) else list(train_jsonl_paths)
    index = _PromptIndex(prompt_records, min_chars)
    matches: list[dict[str, Any]] = []
    for path in map(Path, paths):
        for line_no, conv_id, user_turns, _ in _training_records(path):
            best: dict[int, tuple[str, float, str, int]] = {}  # eval turn -> (kind, fraction, text, train turn)
            for turn_no, text in user_turns:
                for k, (kind, frac, matched) in index.match(text).items():
                    if k not in best or (_KIND_RANK[kind], frac) > (_KIND_RANK[best[k][0]], best[k][1]):
                        best[k] = (kind, frac, matched, turn_no)
            for k, (kind, frac, matched, turn_no) in sorted(best.items()):
                t = index.turns[k]
                matches.append(
                    {
                        "train_file": str(path),
                        "train_line": line_no,
                        "train_id": conv_id,
                        "train_turn": turn_no,
                        "prompt_id": t.prompt_id,
                        "task": t.task,
                        "prompt_turn": t.turn,
                        "kind": kind,
                        "overlap": frac,
                        "matched_text": matched,
                        "prompt_text": t.text,
                    }
                )
    return matches


def filter_contaminated(
    in_path: str | Path, out_path: str | Path, prompt_records: Iterable[dict[str, Any]], min_chars: int = 40
) -> dict[str, Any]:
    """Write `in_path` minus every flagged conversation to `out_path` (lines kept byte for byte).

    The returned stats (counts, removed ids, conversations per task, every match) are also
    written to ``<out_path>.contamination.json``, and a summary line goes to stderr.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.resolve() == in_path.resolve():
        raise PromptError(f"--out must differ from the training file {in_path}")
    matches = find_contamination([in_path], prompt_records, min_chars)
    flagged = {m["train_line"]: m["train_id"] for m in matches}
    total = 0
    with atomic_path(out_path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for line_no, _, _, line in _training_records(in_path):
            total += 1
            if line_no not in flagged:
                f.write(line if line.endswith("\n") else line + "\n")
    by_task = Counter(task for task, _ in {(m["task"], m["train_line"]) for m in matches})
    stats = {
        "input": str(in_path),
        "output": str(out_path),
        "total": total,
        "removed": len(flagged),
        "kept": total - len(flagged),
        "removed_ids": list(flagged.values()),
        "conversations_by_task": dict(sorted(by_task.items())),
        "prompts_matched": len({m["prompt_id"] for m in matches}),
        "num_matches": len(matches),
        "report": str(out_path.with_name(out_path.name + ".contamination.json")),
        "matches": matches,
    }
    Path(stats["report"]).write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    print(
        f"decontaminate: removed {len(flagged)} of {total} conversations from {in_path} (matches in {stats['report']})",
        file=sys.stderr,
    )
    return stats
