"""Append-only JSONL logs: how every resumable job here (regeneration, benchmarks) keeps its work.

A record is one line, written and fsynced before the job moves on, so a kill loses at most the
line being written; reading back removes such a torn last line and names any other bad line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from sglang_edsd.data.chat import DataError


def append_records(out: IO[str], records: list[dict[str, Any]]) -> None:
    """Write `records` as JSON lines and force them to disk."""
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out.flush()
    os.fsync(out.fileno())


def read_append_log(path: Path, what: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The records of a log; a last line cut short by a kill (no final newline) is cut off the file.

    A line that is not a JSON object holding the `required` keys is an error naming file:line and
    calling it not a `what`.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
    records = []
    for line_no, line in enumerate(data[:keep].decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or any(k not in record for k in required):
                raise DataError(f"{path}:{line_no}: not a {what}; fix or remove the file before resuming")
            records.append(record)
    return records
