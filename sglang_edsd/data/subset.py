"""A seeded, filtered subset of a chat dataset: what a training budget can afford.

Why: regeneration and capture cost wall-clock per token, so a budget picks conversations
first. Filters keep what the target can answer in its own style (a user turn first, at most
`max_user_turns` user turns kept, user turns no longer than `max_user_chars`, mostly ASCII
text for an English-only target). Every rejected conversation is counted by reason.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from sglang_edsd.data.chat import Conversation, DataError, load_conversations


def _reason(conv: Conversation, max_user_turns: int, max_user_chars: int, min_ascii: float) -> str | None:
    """Why `conv` is rejected, or None (the kept part is cut to `max_user_turns` user turns)."""
    msgs = [m for m in conv.messages if m["role"] != "system"]
    if not msgs or msgs[0]["role"] != "user":
        return "does not start with a user turn"
    users = [m["content"] for m in msgs if m["role"] == "user"][:max_user_turns]
    if any(not u.strip() for u in users):
        return "empty user turn"
    if any(len(u) > max_user_chars for u in users):
        return f"user turn longer than {max_user_chars} characters"
    text = "".join(users)
    if sum(c.isascii() for c in text) < min_ascii * len(text):
        return f"less than {min_ascii:.0%} ASCII"
    return None


def _cut(messages: list[dict[str, str]], max_user_turns: int) -> list[dict[str, str]]:
    """The conversation up to (and with the answer to) its `max_user_turns`-th user turn."""
    out, users = [], 0
    for m in messages:
        if m["role"] == "user":
            users += 1
            if users > max_user_turns:
                break
        out.append(m)
    return out


def chat_subset(
    in_path: str | Path,
    out_path: str | Path,
    num: int,
    *,
    seed: int = 0,
    max_user_turns: int = 2,
    max_user_chars: int = 4000,
    min_ascii: float = 0.95,
    exclude_ids: set[str] | None = None,
) -> dict[str, Any]:
    """Write `num` conversations drawn in a seeded order that pass the filters; return counts."""
    if num < 1 or max_user_turns < 1:
        raise DataError(f"num and max_user_turns must be >= 1, got {num} and {max_user_turns}")
    malformed: list[str] = []
    convs = list(load_conversations(in_path, skipped=malformed))
    random.Random(seed).shuffle(convs)
    rejected: Counter[str] = Counter({"malformed record (whole file)": len(malformed)} if malformed else {})
    kept = []
    for conv in convs:
        if len(kept) == num:
            break
        reason = (
            "excluded id"
            if exclude_ids and conv.id in exclude_ids
            else _reason(conv, max_user_turns, max_user_chars, min_ascii)
        )
        if reason:
            rejected[reason] += 1
            continue
        kept.append({"id": conv.id, "messages": _cut(conv.messages, max_user_turns)})
    if len(kept) < num:
        raise DataError(
            f"{in_path}: only {len(kept)} of {len(convs)} conversations pass the filters, {num} wanted "
            f"(rejected: {dict(rejected)})"
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    return {
        "kept": len(kept),
        "examined": len(kept) + sum(rejected.values()),
        "rejected": dict(rejected),
        "malformed_examples": malformed[:5],
    }
