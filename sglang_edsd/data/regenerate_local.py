"""In-process batched regeneration with transformers: the same output as `regenerate`, no server.

Why: on a CPU machine a server is the slower path (SGLang decoded SmolLM2 at ~23 new tokens/s
with 16 concurrent requests on this 2-core machine; batched `generate` over 32 length-sorted
conversations made 30.7). Output records, resume (ids already in the output are skipped) and the
system-prompt rule are those of `regenerate`; a batch is written (and fsynced) when all its
turns are answered, so a kill loses at most one batch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sglang_edsd.data.append_log import append_records
from sglang_edsd.data.chat import DataError, load_conversations
from sglang_edsd.data.regenerate import _finished_ids, _prepare
from sglang_edsd.hf_load import load_causal_lm, load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sdpa_gqa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA with grouped KV heads passed as they are.

    transformers' own "sdpa" repeats the KV cache to every query head whenever a padding mask
    is present, which copies the whole cache at each decode step (a third of the time in
    py-spy); `enable_gqa` gives the same logits without the copy.
    """
    mask = None if attention_mask is None else attention_mask[:, :, :, : key.shape[-2]]
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=mask is None and query.shape[2] > 1,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def _load(model_path: str | Path, dtype: str) -> tuple[Any, Any]:
    from transformers import (
        AttentionInterface,
        AttentionMaskInterface,
    )
    from transformers.masking_utils import sdpa_mask

    if dtype not in DTYPES:
        raise DataError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tokenizer = load_tokenizer(model_path, DataError)
    tokenizer.padding_side = "left"  # generation appends on the right of every row
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    AttentionInterface.register("sdpa_gqa", _sdpa_gqa)
    AttentionMaskInterface.register("sdpa_gqa", sdpa_mask)
    return tokenizer, load_causal_lm(model_path, DTYPES[dtype], DataError, attn_implementation="sdpa_gqa")


def _generate(
    tokenizer: Any, model: Any, histories: list[list[dict[str, str]]], max_tokens: int, temperature: float
) -> list[tuple[str, str]]:
    """One left-padded batch: (content, finish_reason) per history, OpenAI's reasons."""
    prompts = [_render(tokenizer, h) for h in histories]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id, top_p=None, top_k=None, **sampling
        )
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    results = []
    for row in out[:, enc.input_ids.shape[1] :].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
        tokens = row if stop is None else row[:stop]
        results.append((tokenizer.decode(tokens, skip_special_tokens=True), "length" if stop is None else "stop"))
    return results


def _render(tokenizer: Any, history: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)


def _answer_batch(
    tokenizer: Any,
    model: Any,
    batch: list[tuple[str, list[dict[str, str]]]],
    max_tokens: int,
    temperature: float,
    max_context: int,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Answer every assistant turn of every conversation, one batched generate per turn index.

    Returns (records, failures): a conversation whose prompt plus max_tokens outgrows the
    context is reported as failed, the rest of the batch goes on.
    """
    plans = [msgs + ([] if msgs[-1]["role"] == "assistant" else [{"role": "assistant"}]) for _, msgs in batch]
    histories: list[list[dict[str, str]]] = [[] for _ in batch]
    reasons: list[list[str]] = [[] for _ in batch]
    cursors = [0] * len(batch)
    failed: dict[int, str] = {}
    while True:
        asking = []
        for i, plan in enumerate(plans):  # copy user/system turns up to the next assistant turn
            while cursors[i] < len(plan) and plan[cursors[i]]["role"] != "assistant":
                histories[i].append(plan[cursors[i]])
                cursors[i] += 1
            if cursors[i] < len(plan) and i not in failed:
                length = len(tokenizer(_render(tokenizer, histories[i]), add_special_tokens=False).input_ids)
                if length + max_tokens > max_context:
                    failed[i] = (
                        f"a prompt of {length} tokens plus max_tokens={max_tokens} exceeds the model's "
                        f"context of {max_context}; lower --max-tokens or filter the data (`subset`)"
                    )
                else:
                    asking.append(i)
        if not asking:
            break
        answers = _generate(tokenizer, model, [histories[i] for i in asking], max_tokens, temperature)
        for i, (content, reason) in zip(asking, answers):
            histories[i].append({"role": "assistant", "content": content})
            reasons[i].append(reason)
            cursors[i] += 1
    records = [
        {"id": conv_id, "messages": h, "finish_reasons": r}
        for i, ((conv_id, _), h, r) in enumerate(zip(batch, histories, reasons))
        if i not in failed
    ]
    return records, [(batch[i][0], error) for i, error in failed.items()]


def regenerate_local(
    in_path: str | Path,
    out_path: str | Path,
    model_path: str | Path,
    *,
    batch_size: int = 32,
    max_tokens: int = 512,
    temperature: float = 0.0,
    system_prompt: str | None = None,
    limit: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-answer the conversations of in_path (the first `limit`) into out_path with a local model.

    Conversations are batched in order of prompt length (less padding); the output is in
    completion order. Returns the same stats as `regenerate` ({"done", "skipped_existing", "failed"}).
    """
    if batch_size < 1 or max_tokens < 1 or (limit is not None and limit < 0):
        raise DataError(f"need batch_size >= 1, max_tokens >= 1, limit >= 0 (got {batch_size}, {max_tokens}, {limit})")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    finished = _finished_ids(out_path)
    stats: dict[str, Any] = {"done": 0, "skipped_existing": 0, "failed": []}
    todo: list[tuple[str, list[dict[str, str]]]] = []
    for conv in itertools.islice(load_conversations(in_path), limit):
        if conv.id in finished:
            stats["skipped_existing"] += 1
            continue
        try:
            todo.append((conv.id, _prepare(conv, system_prompt)))
        except DataError as e:
            stats["failed"].append((conv.id, str(e)))
    todo.sort(key=lambda item: sum(len(m.get("content") or "") for m in item[1]))
    if not todo:
        return stats
    tokenizer, model = _load(model_path, dtype)
    max_context = int(getattr(model.config, "max_position_embeddings", 1 << 30))
    torch.manual_seed(seed)
    with (
        out_path.open("a", encoding="utf-8") as out,
        tqdm(total=len(todo), desc="regenerate (local)", unit="conv", disable=not progress) as bar,
    ):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            records, failures = _answer_batch(tokenizer, model, batch, max_tokens, temperature, max_context)
            stats["failed"].extend(failures)
            append_records(out, records)
            stats["done"] += len(records)
            bar.update(len(batch))
    return stats
