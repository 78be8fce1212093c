"""Write the benchmark prompt sets as jsonl, read them back, and normalise a user's own prompts.

One record per line: ``{"id", "task", "turns": [user messages], "reference", "source", "meta"}``
(plus ``"system"`` when a user's chat record has a system message). Benchmarks replay the
turns in order; `reference` is whatever the source gives for scoring, or null.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sglang_edsd.files import atomic_path
from sglang_edsd.prompts.sources import LOADERS, USER_ROLES, PromptError, message_text

ALL_TASKS: tuple[str, ...] = tuple(LOADERS)
PROMPT_FIELDS = ("id", "turns", "prompt", "messages", "reference")


def select_subset(records: list[dict[str, Any]], num: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """The first `num` records after a `random.Random(seed)` shuffle, returned in source order.

    Same records, seed and num -> same subset on every run; a smaller num gives a subset of a
    larger one. None (or num >= len) keeps everything.
    """
    if num is None or num >= len(records):
        return list(records)
    if num < 0:
        raise PromptError(f"num_per_task must be >= 0, got {num}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:num])]


def write_prompts(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write records as jsonl, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def build_prompt_sets(
    out_dir: str | Path, tasks: Iterable[str] = ALL_TASKS, num_per_task: int | None = None, seed: int = 0
) -> dict[str, Path]:
    """Write ``<out_dir>/<task>.jsonl`` for each task; returns {task: path}."""
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in LOADERS]
    if unknown:
        raise PromptError(f"unknown task(s) {unknown}; choose from {list(ALL_TASKS)}")
    out = Path(out_dir)
    return {t: write_prompts(select_subset(LOADERS[t](), num_per_task, seed), out / f"{t}.jsonl") for t in tasks}


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(file:line, parsed object) for every non-blank line of a jsonl file."""
    try:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{line_no}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise PromptError(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError:
        raise PromptError(f"{path}: not a UTF-8 text file") from None


def _dataset_rows(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    """Rows of a Hugging Face dataset folder (save_to_disk); a DatasetDict needs a split unless it has one."""
    try:
        import datasets
    except ImportError:
        raise PromptError(f"{path} is a folder: reading a Hugging Face dataset needs `pip install datasets`") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:  # not a save_to_disk folder
        raise PromptError(f"{path}: not a Hugging Face dataset folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None and len(ds) != 1:
            raise PromptError(f"{path}: dataset has splits {sorted(ds)}; choose one with split=")
        if split is not None and split not in ds:
            raise PromptError(f"{path}: no split {split!r} (splits: {sorted(ds)})")
        ds = ds[split] if split is not None else next(iter(ds.values()))
    return ((f"{path}: row {i}", row) for i, row in enumerate(ds))


def _turns(row: Mapping[str, Any], where: str) -> tuple[list[str], str | None, Any]:
    """(user turns, system message, assistant replies or None) from `turns`, `prompt` or `messages`."""
    if row.get("turns") is not None:
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise PromptError(f"{where}: 'turns' must be a non-empty list of non-empty strings")
        return list(turns), None, None
    if row.get("prompt") is not None:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise PromptError(f"{where}: 'prompt' must be a non-empty string")
        return [row["prompt"]], None, None
    messages = row.get("messages")
    if messages is None:
        raise PromptError(f"{where}: record has none of 'turns', 'prompt', 'messages' (keys: {sorted(row)[:8]})")
    if not isinstance(messages, list) or not messages:
        raise PromptError(f"{where}: 'messages' must be a non-empty list")
    pairs = [message_text(m, f"{where}: message {k}") for k, m in enumerate(messages)]
    user = [text for role, text in pairs if role in USER_ROLES]
    system = [text for role, text in pairs if role == "system"]
    replies = [text for role, text in pairs if role not in USER_ROLES and role != "system"]
    if not user:
        raise PromptError(f"{where}: 'messages' holds no user message")
    if len(system) > 1:
        raise PromptError(f"{where}: more than one system message")
    return user, (system[0] if system else None), (replies or None)


def load_user_prompts(
    path: str | Path, task_name: str, columns: Mapping[str, str] | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """A user's jsonl file or HF dataset folder -> prompt records of task `task_name`.

    `columns` maps our fields (id, turns, prompt, messages, reference) to the input's column
    names, e.g. ``{"prompt": "question", "reference": "answer"}``. Without a `reference`
    column, the assistant replies of a `messages` record (if any) become the reference.
    """
    path = Path(path)
    columns = dict(columns or {})
    bad = sorted(set(columns) - set(PROMPT_FIELDS))
    if bad:
        raise PromptError(f"unknown field(s) {bad} in the column mapping; fields are {list(PROMPT_FIELDS)}")
    if not task_name or not task_name.replace("_", "").replace("-", "").isalnum():
        raise PromptError(f"task name must be letters, digits, '-' or '_', got {task_name!r}")
    if not path.exists():
        raise PromptError(f"prompt file not found: {path}")
    rows = _dataset_rows(path, split) if path.is_dir() else _json_lines(path)
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for n, (where, raw) in enumerate(rows):
        if not isinstance(raw, Mapping):
            raise PromptError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        missing = [c for c in columns.values() if c not in raw]
        if missing:
            raise PromptError(f"{where}: mapped column(s) {missing} missing (keys: {sorted(raw)[:8]})")
        row = {field: raw.get(columns.get(field, field)) for field in PROMPT_FIELDS}
        turns, system, replies = _turns(row, where)
        rid = row["id"]
        if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
            raise PromptError(f"{where}: 'id' must be a string or an integer, got {type(rid).__name__}")
        rid = f"{task_name}-{n}" if rid is None else str(rid)
        if rid in seen:
            raise PromptError(f"{where}: duplicate id {rid!r} (first at {seen[rid]})")
        seen[rid] = where
        record = {
            "id": rid,
            "task": task_name,
            "turns": turns,
            "reference": row["reference"] if row["reference"] is not None else replies,
            "source": str(path),
            "meta": {},
        }
        if system is not None:
            record["system"] = system
        records.append(record)
    if not records:
        raise PromptError(f"no prompts in {path}")
    return records


def _check_record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise PromptError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("id", "task", "source"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise PromptError(f"{where}: '{key}' must be a non-empty string")
    turns = record.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise PromptError(f"{where}: 'turns' must be a non-empty list of strings")
    if "reference" not in record:
        raise PromptError(f"{where}: 'reference' is missing (use null when there is none)")
    return record


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Records of a prompt jsonl written by this module, checked; a folder reads all its *.jsonl."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise PromptError(f"no *.jsonl prompt files in {path}")
        records = [r for f in files for r in load_prompts(f)]
        dups = sorted(i for i, c in Counter(r["id"] for r in records).items() if c > 1)
        if dups:
            raise PromptError(f"{path}: prompt id(s) {dups[:5]} appear in more than one record")
        return records
    if not path.exists():
        raise PromptError(f"prompt file not found: {path}")
    records = [_check_record(r, where) for where, r in _json_lines(path)]
    if not records:
        raise PromptError(f"no prompts in {path}")
    return records
