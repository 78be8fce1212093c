"""Append-only JSONL logs: how every resumable job here (regeneration, benchmarks) keeps its work.

A record is one line, written and fsynced before the job moves on, so a kill loses at most the
line being written; reading back removes such a torn last line and names any other bad line.
A finished log is kept gzipped (`pack`, `<log>.gz`): readers take either, and `unpack` restores
the plain file when a job appends to it again.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import IO, Any

from sglang_edsd.data.chat import DataError
from sglang_edsd.files import atomic_path


def append_records(out: IO[str], records: list[dict[str, Any]]) -> None:
    """Write `records` as JSON lines and force them to disk."""
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out.flush()
    os.fsync(out.fileno())


def read_append_log(path: Path, what: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The records of a log, or of its packed copy when only that exists; a last line cut short by
    a kill (no final newline) is cut off the file.

    A line that is not a JSON object holding the `required` keys is an error naming file:line and
    calling it not a `what`.
    """
    if not path.exists():
        gz = packed(path)
        return _parse(gzip.decompress(gz.read_bytes()), gz, what, required) if gz.exists() else []
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
    return _parse(data[:keep], path, what, required)


def _parse(data: bytes, path: Path, what: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
    records = []
    for line_no, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or any(k not in record for k in required):
                raise DataError(f"{path}:{line_no}: not a {what}; fix or remove the file before resuming")
            records.append(record)
    return records


def packed(path: Path) -> Path:
    """Where `pack` keeps the log `path`: `<path>.gz`."""
    return path.with_name(path.name + ".gz")


def pack(path: Path) -> Path:
    """Gzip a finished log to `<path>.gz` and remove the plain file. The bytes depend on the
    records only (no name or time in the gzip header), so packing an unchanged log changes no file."""
    gz = packed(path)
    with atomic_path(gz) as tmp:
        tmp.write_bytes(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    path.unlink()
    return gz


def unpack(path: Path) -> None:
    """Restore the plain log from `<path>.gz`, if only the packed one exists, so a job can append."""
    if not path.exists() and packed(path).exists():
        with atomic_path(path) as tmp:
            tmp.write_bytes(gzip.decompress(packed(path).read_bytes()))
