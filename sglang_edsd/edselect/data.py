"""Calibration data for EDSelect: a JSONL (or JSON array) file of text or chat records.

Accepted records (one JSON object per line):
* ``{"text": "..."}`` - used as is;
* ``{"messages": [{"role": "user", "content": "..."}, ...]}`` (OpenAI style) or
  ``{"conversations": [{"from": "human", "value": "..."}, ...]}`` (ShareGPT style) -
  rendered with the target tokenizer's chat template, as the draft will see them.

``num_samples`` records are drawn uniformly at random (seeded reservoir sampling, so the
file is streamed and never held in memory); only the drawn records are parsed. Every
problem is raised as EDSelectError naming the file and line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sglang_edsd.data.chat import DataError, normalise_messages
from sglang_edsd.edselect.errors import EDSelectError


@dataclass(frozen=True)
class CalibrationData:
    texts: list[str]
    num_records: int  # non-blank records in the file
    path: Path


def record_to_text(record: Any, tokenizer: Any | None, where: str = "record") -> str:
    """The calibration text of one record (chat records go through the chat template)."""
    if not isinstance(record, dict):
        raise EDSelectError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "text" in record:
        text = record["text"]
        if not isinstance(text, str) or not text.strip():
            raise EDSelectError(f"{where}: 'text' must be a non-empty string")
        return text
    key = "messages" if "messages" in record else "conversations" if "conversations" in record else None
    if key is None:
        raise EDSelectError(
            f"{where}: record has none of 'text', 'messages', 'conversations' (keys: {sorted(record)[:8]})"
        )
    try:
        messages = normalise_messages(record[key], where)
    except DataError as e:  # the shared ShareGPT/OpenAI normaliser; EDSelect reports its own error type
        raise EDSelectError(str(e)) from None
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise EDSelectError(
            f'{where}: chat record but the target tokenizer has no chat template; use {{"text": ...}} records'
        )
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as e:  # templates raise arbitrary errors (e.g. role alternation)
        raise EDSelectError(f"{where}: the chat template rejected this conversation ({e})") from None
    if not isinstance(text, str) or not text.strip():
        raise EDSelectError(f"{where}: the chat template rendered an empty text")
    return text


def _sample_lines(path: Path, k: int, seed: int) -> tuple[list[tuple[int, str]], int]:
    """Reservoir-sample k non-blank lines (line number, line); also return the count."""
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    seen = 0
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            seen += 1
            if len(reservoir) < k:
                reservoir.append((line_no, line))
            else:
                j = rng.randrange(seen)
                if j < k:
                    reservoir[j] = (line_no, line)
    return sorted(reservoir), seen


def load_calibration_data(
    path: str | Path, tokenizer: Any | None = None, num_samples: int = 128, seed: int = 0
) -> CalibrationData:
    """Draw up to `num_samples` records from a JSONL/JSON file and render them to texts."""
    path = Path(path)
    if num_samples < 1:
        raise EDSelectError(f"num_samples must be >= 1, got {num_samples}")
    if not path.exists():
        raise EDSelectError(f"calibration data file not found: {path}")
    if not path.is_file():
        raise EDSelectError(f"calibration data path is not a file: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            head = f.read(4096).lstrip()
    except UnicodeDecodeError:
        raise EDSelectError(f"{path}: not a UTF-8 text file") from None
    if head.startswith("["):  # a JSON array of records
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EDSelectError(f"{path}: not valid JSON ({e})") from None
        picked = sorted(random.Random(seed).sample(range(len(records)), min(num_samples, len(records))))
        items = [(f"{path}: record {i}", records[i]) for i in picked]
        total = len(records)
    else:
        try:
            lines, total = _sample_lines(path, num_samples, seed)
        except UnicodeDecodeError:
            raise EDSelectError(f"{path}: not a UTF-8 text file") from None
        items = []
        for line_no, line in lines:
            where = f"{path}:{line_no}"
            try:
                items.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                raise EDSelectError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if total == 0:
        raise EDSelectError(f"calibration data file has no records: {path}")
    texts = [record_to_text(record, tokenizer, where) for where, record in items]
    return CalibrationData(texts=texts, num_records=total, path=path)
