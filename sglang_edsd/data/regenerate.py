"""Response regeneration: re-answer a chat dataset with the target through an OpenAI-compatible server.

A draft learns best from the target's own answers (EAGLE-3, SpecForge), so the assistant turns
of a dataset are replaced by what the target says when given the same history. The output is
JSONL, one line per finished conversation, appended and fsynced as conversations finish: the
lines come in completion order, not input order. A restart skips the ids already in the
output, so a killed run loses only the conversations that were in flight.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sglang_edsd.data.append_log import append_records, read_append_log
from sglang_edsd.data.chat import Conversation, DataError, load_conversations

RETRIES = 3
RETRY_BACKOFF_S = 1.0  # doubled after each failed attempt


def _finished_ids(out_path: Path) -> set[str]:
    """Ids already in the output; a last line cut short by a kill is removed from the file."""
    return {r["id"] for r in read_append_log(out_path, "regenerated record", ("id",))}


def _prepare(conv: Conversation, system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation to answer: system_prompt (if any) replaces its system turns."""
    messages = conv.messages
    if system_prompt is not None:
        messages = [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"conversation {conv.id!r} has no user turn to answer")
    return messages


def _ask(client: Any, history: list[dict[str, str]], options: dict[str, Any]) -> tuple[str, str]:
    """One chat completion (content, finish_reason), retried RETRIES times with backoff.

    Client errors (HTTP 4xx but timeouts and rate limits, e.g. a prompt longer than the
    context) come back the same every time and fail at once.
    """
    for attempt in range(RETRIES + 1):
        try:
            choice = client.chat.completions.create(messages=history, **options).choices[0]
            break
        except Exception as e:  # transport errors and server errors are worth a retry
            status = getattr(e, "status_code", None) or 0
            if attempt == RETRIES or (400 <= status < 500 and status not in (408, 429)):
                raise
            time.sleep(RETRY_BACKOFF_S * 2**attempt)
    if choice.message.content is None:
        raise RuntimeError(f"the server returned no text content (finish_reason={choice.finish_reason!r})")
    return choice.message.content, str(choice.finish_reason)


def _answer(client: Any, conv_id: str, messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
    """Re-answer every assistant turn given the regenerated history; answer a trailing user turn."""
    history: list[dict[str, str]] = []
    finish_reasons = []
    for message in messages + ([] if messages[-1]["role"] == "assistant" else [{"role": "assistant"}]):
        if message["role"] != "assistant":
            history.append(message)
            continue
        content, reason = _ask(client, history, options)
        history.append({"role": "assistant", "content": content})
        finish_reasons.append(reason)
    return {"id": conv_id, "messages": history, "finish_reasons": finish_reasons}


def regenerate(
    in_path: str | Path,
    out_path: str | Path,
    base_url: str,
    model: str,
    *,
    concurrency: int = 8,
    max_tokens: int = 512,
    temperature: float = 0.0,
    api_key: str = "EMPTY",
    system_prompt: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    extra_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-answer the conversations of in_path (the first `limit`) into out_path; resumable.

    Returns {"done": finished now, "skipped_existing": already in out_path, "failed": [(id, error)]}.
    A conversation whose request still fails after RETRIES retries is listed in failed and not
    written, so the next run retries it. `system_prompt` replaces the conversations' system
    turns, in the requests and in the output alike. `extra_body` goes to every request.
    """
    if concurrency < 1 or max_tokens < 1 or (limit is not None and limit < 0):
        raise DataError(
            f"need concurrency >= 1, max_tokens >= 1, limit >= 0 (got {concurrency}, {max_tokens}, {limit})"
        )
    import openai

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    finished = _finished_ids(out_path)
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    options = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "extra_body": extra_body}
    total = sum(1 for _ in itertools.islice(load_conversations(in_path), limit))  # bad input fails before any request
    stats: dict[str, Any] = {"done": 0, "skipped_existing": 0, "failed": []}
    pending: dict[Future, str] = {}
    bar = tqdm(total=total, desc="regenerate", unit="conv", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        with out_path.open("a", encoding="utf-8") as out:

            def collect(futures: Iterable[Future]) -> None:
                for future in list(futures):
                    conv_id = pending.pop(future)
                    try:
                        record = future.result()
                    except Exception as e:
                        stats["failed"].append((conv_id, f"{type(e).__name__}: {e}"))
                    else:
                        append_records(out, [record])
                        stats["done"] += 1
                    bar.update()

            for conv in itertools.islice(load_conversations(in_path), limit):
                if conv.id in finished:
                    stats["skipped_existing"] += 1
                    bar.update()
                    continue
                try:
                    messages = _prepare(conv, system_prompt)
                except DataError as e:
                    stats["failed"].append((conv.id, str(e)))
                    bar.update()
                    continue
                pending[pool.submit(_answer, client, conv.id, messages, options)] = conv.id
                if len(pending) >= 2 * concurrency:  # bounded: the input is streamed, never held whole
                    collect(wait(pending, return_when=FIRST_COMPLETED).done)
            collect(wait(pending).done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return stats
