"""Chat records -> token ids with the target's chat template and a loss mask on assistant tokens.

ShareGPT (``conversations``: from/value) or OpenAI (``messages``: role/content) records from JSONL,
a JSON array file or a Hugging Face dataset folder (``save_to_disk``). Every bad input raises
DataError naming the file and line (or record) and the field.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sglang_edsd.errors import EDSDError
from sglang_edsd.files import atomic_path

ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
}


class DataError(EDSDError):
    """Bad data input; the message names the file, line or record and the field."""


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: list[dict[str, str]]


def _content_text(content: Any, where: str) -> str:
    """A string, or OpenAI content parts (``[{"type": "text", "text": ...}]``) joined."""
    if isinstance(content, list):
        if not content:
            raise DataError(f"{where}: empty content list")
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise DataError(f"{where}: content parts must all be {{'type': 'text', 'text': str}}")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise DataError(f"{where}: content must be a string, got {type(content).__name__}")
    return content


def normalise_messages(turns: Any, where: str) -> list[dict[str, str]]:
    """ShareGPT or OpenAI turns -> ``[{"role": system|user|assistant|tool, "content": str}]``."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: chat record must hold a non-empty list of turns")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: turn {k} is not an object")
        role = turn.get("role") if turn.get("role") is not None else turn.get("from")  # HF rows: unused keys
        content = turn.get("content") if turn.get("content") is not None else turn.get("value")  # hold None
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise DataError(f"{where}: turn {k} has unknown role {role!r} (expected one of {sorted(ROLES)})")
        content = _content_text(content, f"{where}: turn {k}")
        messages.append({"role": ROLES[role.lower()], "content": content})
    return messages


def _dataset_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Records of a Hugging Face dataset folder (save_to_disk): its 'train' split or its only one."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{path} is a folder: reading a Hugging Face dataset folder needs the "
            "`datasets` package (pip install datasets), or give a JSONL file"
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # not a save_to_disk folder
        raise DataError(f"{path}: not a Hugging Face dataset folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise DataError(f"{path}: dataset has splits {sorted(ds)}; expected 'train' or a single split")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ((f"{path}: record {i}", record) for i, record in enumerate(ds))


def _file_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) for every record of a JSONL or JSON array file."""
    try:
        with path.open(encoding="utf-8") as f:
            is_array = f.read(4096).lstrip().startswith("[")
            f.seek(0)
            lines = [(1, f.read())] if is_array else enumerate(f, start=1)
            for line_no, text in lines:
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    where = f"{path}:{line_no + e.lineno - 1}"
                    raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
                if is_array:
                    yield from ((f"{path}: record {i}", r) for i, r in enumerate(record))
                else:
                    yield f"{path}:{line_no}", record
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None


def load_conversations(path: str | Path, skipped: list[str] | None = None) -> Iterator[Conversation]:
    """Stream the conversations of a data file; ids are the record's "id" or "<stem>-<index>".

    A malformed record raises DataError, or, when a `skipped` list is given, is appended to it
    (its error message, which names file:line) and passed over.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    seen: dict[str, str] = {}
    records = _dataset_records(path) if path.is_dir() else _file_records(path)
    for index, (where, record) in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        key = "messages" if record.get("messages") is not None else "conversations"
        if record.get(key) is None:
            raise DataError(f"{where}: record has neither 'messages' nor 'conversations' (keys: {sorted(record)[:8]})")
        rid = record.get("id")
        if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
            raise DataError(f"{where}: 'id' must be a string or an integer, got {type(rid).__name__}")
        rid = f"{path.stem}-{index}" if rid is None else str(rid)
        try:
            if rid in seen:
                raise DataError(f"{where}: duplicate id {rid!r} (first at {seen[rid]})")
            messages = normalise_messages(record[key], where)
        except DataError as e:
            if skipped is None:
                raise
            skipped.append(str(e))
            continue
        seen[rid] = where
        yield Conversation(id=rid, messages=messages)
    if not seen:
        raise DataError(f"no records in {path}")


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # templates raise arbitrary errors (e.g. role alternation)
        raise DataError(f"the chat template rejected this conversation ({e})") from None


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int | None
) -> tuple[list[int], list[int]]:
    """Chat-template token ids and a loss mask that is 1 on assistant content and end-of-turn.

    Any prefix-stable template works: rendering messages[:k] for growing k must only append tokens,
    so the pieces add up to the full render (checked per turn; templates that rewrite earlier turns,
    e.g. dropping old reasoning, are refused). In an assistant piece, tokens starting after the role
    header (the text shared with the generation prompt) are learned up to and including the piece's
    last special token (``<|im_end|>``, ``<|eot_id|>``; ChatML's newline after it is not).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the target tokenizer has no chat template")
    if max_length is not None and max_length < 1:
        raise DataError(f"max_length must be >= 1, got {max_length}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("no assistant turn, nothing to learn (answer the prompts first: sglang-edsd regenerate)")
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ids: list[int] = []
    mask: list[int] = []
    for k, message in enumerate(messages):
        text = _render(tokenizer, messages[: k + 1])
        try:  # no special tokens added: the template writes BOS itself
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise DataError("the target tokenizer gives no character offsets (needs a fast tokenizer)") from None
        full, offsets = enc["input_ids"], enc["offset_mapping"]
        if full[: len(ids)] != ids:
            raise DataError(f"the chat template is not prefix-stable: rendering turn {k} changes earlier tokens")
        mask += [0] * (len(full) - len(ids))
        if message["role"] == "assistant":
            header_end = len(os.path.commonprefix([_render(tokenizer, messages[:k], True), text]))
            start = next((j for j in range(len(ids), len(full)) if offsets[j][0] >= header_end), len(full))
            end = max((j + 1 for j in range(start, len(full)) if full[j] in special), default=len(full))
            mask[start:end] = [1] * (end - start)
        ids = full
        if max_length is not None and len(ids) >= max_length:
            break  # later turns would be cut off anyway
    return (ids[:max_length], mask[:max_length]) if max_length is not None else (ids, mask)


def build_token_dataset(
    conversations: Iterable[Conversation],
    tokenizer: Any,
    out_path: str | Path,
    max_length: int = 2048,
    progress: bool = True,
    skip_invalid: bool = False,
) -> dict[str, Any]:
    """Tokenize conversations into a JSONL of {id, input_ids, loss_mask}; return stats.

    Samples left with no loss-bearing token (answers truncated away) are skipped and listed in
    ``skipped_no_loss``. A conversation the chat template cannot render (e.g. a ShareGPT split
    that starts with an assistant turn) stops the run, or with ``skip_invalid`` is skipped and
    listed with its reason in ``skipped_invalid`` (and in ``<out>.skipped.jsonl``). Written to a
    temporary name and renamed: never a half-written dataset.
    """
    if max_length < 1:
        raise DataError(f"max_length must be >= 1, got {max_length}")
    out_path = Path(out_path)
    stats: dict[str, Any] = {
        "samples": 0,
        "tokens": 0,
        "loss_tokens": 0,
        "truncated": 0,
        "skipped_no_loss": [],
        "skipped_invalid": [],
    }
    with atomic_path(out_path) as tmp:
        with tmp.open("w", encoding="utf-8") as f:
            for conv in tqdm(conversations, desc="tokenize", unit="conv", disable=not progress):
                try:  # one token more than kept tells whether the sample was truncated
                    ids, mask = tokenize_conversation(tokenizer, conv.messages, max_length + 1)
                except DataError as e:
                    if not skip_invalid:
                        raise DataError(
                            f"conversation {conv.id!r}: {e} (pass skip_invalid / --skip-invalid to "
                            "skip and list such conversations)"
                        ) from None
                    stats["skipped_invalid"].append({"id": conv.id, "reason": str(e)})
                    continue
                if len(ids) > max_length:
                    stats["truncated"] += 1
                    ids, mask = ids[:max_length], mask[:max_length]
                if not any(mask):
                    stats["skipped_no_loss"].append(conv.id)
                    continue
                f.write(json.dumps({"id": conv.id, "input_ids": ids, "loss_mask": mask}) + "\n")
                stats["samples"] += 1
                stats["tokens"] += len(ids)
                stats["loss_tokens"] += sum(mask)
        if stats["samples"] == 0:
            raise DataError(
                f"token dataset is empty after masking: {len(stats['skipped_no_loss'])} conversations, "
                f"none kept an assistant token within max_length={max_length}"
            )
    if stats["skipped_invalid"]:
        listing = out_path.with_name(out_path.name + ".skipped.jsonl")
        listing.write_text("".join(json.dumps(r) + "\n" for r in stats["skipped_invalid"]), encoding="utf-8")
        print(
            f"warning: skipped {len(stats['skipped_invalid'])} conversations the chat template cannot render; "
            f"ids and reasons in {listing}",
            file=sys.stderr,
        )
    if stats["skipped_no_loss"]:
        print(
            f"warning: skipped {len(stats['skipped_no_loss'])} conversations with no assistant token within "
            f"max_length={max_length}: {stats['skipped_no_loss'][:5]}",
            file=sys.stderr,
        )
    return stats


def read_token_dataset(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream and validate the samples written by build_token_dataset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token dataset not found: {path}")
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                s = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(s, dict) or not isinstance(s.get("id"), str):
                raise DataError(f"{where}: expected an object with a string 'id'")
            ids, mask = s.get("input_ids"), s.get("loss_mask")
            if not isinstance(ids, list) or not ids or not all(type(i) is int and i >= 0 for i in ids):
                raise DataError(f"{where}: 'input_ids' must be a non-empty list of non-negative integers")
            if not (
                isinstance(mask, list)
                and len(mask) == len(ids)
                and all(type(m) is int for m in mask)
                and set(mask) <= {0, 1}
            ):
                raise DataError(f"{where}: 'loss_mask' must be a list of 0/1 as long as 'input_ids' ({len(ids)})")
            yield s
