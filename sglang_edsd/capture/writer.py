"""Run the target with transformers over a tokenized JSONL and write sharded captures.

One sample per forward pass (no padding, so results cannot depend on batch composition).
Features come from forward hooks: decoder layer i's output for SGLang id i, and the input
of the final norm for the pre-norm final hidden state (transformers' last `hidden_states`
entry is post-norm). Entropy and top-1 are taken over the full vocabulary from float32
logits, a chunk of rows at a time so a 2048-token sample never holds (T, V) logits at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from sglang_edsd.capture.layout import (
    STORAGE_DTYPES,
    CaptureError,
    bytes_per_token,
    check_layer_ids,
    check_resumable,
    format_report,
    load_manifest,
    new_manifest,
    shard_file,
    write_manifest,
)
from sglang_edsd.files import atomic_path
from sglang_edsd.hf_load import load_causal_lm

ENTROPY_CHUNK = 256  # rows of (chunk, vocab) float32 logits: 50 MB for a 49k vocab
_MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _read_tokens(
    path: Path, vocab_size: int, max_length: int, hasher: Any = None
) -> Iterator[tuple[str, list[int], list[int]]]:
    """Validated, truncated (id, input_ids, loss_mask) per line; errors name file:line."""
    seen: dict[str, int] = {}
    try:
        f = path.open("rb")
    except OSError as e:
        raise CaptureError(f"cannot read tokens file {path}: {e}") from None
    with f:
        for line_no, raw in enumerate(f, 1):
            if hasher is not None:
                hasher.update(raw)
            if not raw.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CaptureError(f"{where}: invalid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise CaptureError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            sid, ids, mask = rec.get("id"), rec.get("input_ids"), rec.get("loss_mask")
            if not isinstance(sid, str):
                raise CaptureError(f"{where}: 'id' must be a string, got {sid!r}")
            if sid in seen:
                raise CaptureError(f"{where}: duplicate id {sid!r} (first on line {seen[sid]})")
            seen[sid] = line_no
            if not isinstance(ids, list) or not ids:
                raise CaptureError(f"{where}: 'input_ids' must be a non-empty list of ints")
            if not isinstance(mask, list) or len(mask) != len(ids):
                n = len(mask) if isinstance(mask, list) else type(mask).__name__
                raise CaptureError(f"{where}: 'loss_mask' must be a list as long as input_ids ({len(ids)}), got {n}")
            for k, t in enumerate(ids):
                if type(t) is not int or not 0 <= t < vocab_size:
                    raise CaptureError(f"{where}: input_ids[{k}] = {t!r} is not a token id in 0..{vocab_size - 1}")
            for k, m in enumerate(mask):
                if type(m) is not int or m not in (0, 1):
                    raise CaptureError(f"{where}: loss_mask[{k}] = {m!r} is not 0 or 1")
            yield sid, ids[:max_length], mask[:max_length]


def scan_tokens(path: Path, vocab_size: int, max_length: int) -> tuple[str, list[tuple[str, int]]]:
    """Validate the whole file before loading the model: (sha256, [(id, truncated length)])."""
    hasher = hashlib.sha256()
    samples = [(sid, len(ids)) for sid, ids, _ in _read_tokens(path, vocab_size, max_length, hasher)]
    if not samples:
        raise CaptureError(f"{path}: no samples")
    return hasher.hexdigest(), samples


def load_target_model(target_path: Path, device: str | None, model_dtype: str) -> torch.nn.Module:
    if model_dtype not in _MODEL_DTYPES:
        raise CaptureError(f"model_dtype must be one of {_MODEL_DTYPES}, got {model_dtype!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model_dtype == "auto":
        model_dtype = "float32" if device == "cpu" else "bfloat16"
    return load_causal_lm(target_path, getattr(torch, model_dtype), CaptureError).to(device)


@contextmanager
def _hooks(model: torch.nn.Module, layer_ids: Sequence[int], storage: torch.dtype) -> Iterator[dict]:
    """Collect decoder-layer outputs and the final norm's input (copied to the storage dtype)."""
    base = model.get_decoder()
    got: dict[str, torch.Tensor] = {}

    def keep(name: str, t: Any) -> None:
        t = t[0] if isinstance(t, tuple) else t
        got[name] = t[0].to(storage, copy=True)

    handles = [base.layers[i].register_forward_hook(lambda m, a, out, i=i: keep(f"hidden.{i}", out)) for i in layer_ids]
    handles.append(base.norm.register_forward_pre_hook(lambda m, args: keep("final_hidden", args)))
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def target_features(
    model: torch.nn.Module, input_ids: torch.Tensor, layer_ids: Sequence[int], storage: torch.dtype, **forward: Any
) -> dict[str, torch.Tensor]:
    """Features of one row of token ids (1-D, on the model's device), left on that device:
    hidden.<id>, final_hidden, entropy, target_top1. `forward` goes to the decoder's forward
    (the packed path's positions and segments, `capture.packed`)."""
    lm_head = model.get_output_embeddings()
    with torch.inference_mode(), _hooks(model, layer_ids, storage) as got:
        normed = model.get_decoder()(input_ids=input_ids[None], use_cache=False, **forward).last_hidden_state[0]
        entropy, top1 = [], []
        for s in range(0, normed.shape[0], ENTROPY_CHUNK):
            logits = lm_head(normed[s : s + ENTROPY_CHUNK]).float()
            logp = torch.log_softmax(logits, dim=-1)
            entropy.append(-(logp.exp() * logp).sum(-1))
            top1.append(logits.argmax(-1))
        got["entropy"] = torch.cat(entropy)
        got["target_top1"] = torch.cat(top1).to(torch.int32)
        return dict(got)


def run_target(
    model: torch.nn.Module, input_ids: list[int], layer_ids: Sequence[int], storage: torch.dtype
) -> dict[str, torch.Tensor]:
    """One sample's features on the CPU: hidden.<id>, final_hidden, entropy, target_top1."""
    device = next(model.parameters()).device
    feats = target_features(model, torch.tensor(input_ids, device=device), layer_ids, storage)
    return {k: v.cpu() for k, v in feats.items()}


def _write_shard(out_dir: Path, index: int, samples: list[tuple[str, list[int], list[int], dict]]) -> dict:
    """Concatenate samples into one safetensors file (atomically); return its manifest entry."""
    lengths = [len(ids) for _, ids, _, _ in samples]
    tensors = {
        "input_ids": torch.tensor([t for _, ids, _, _ in samples for t in ids], dtype=torch.int32),
        "loss_mask": torch.tensor([m for _, _, mask, _ in samples for m in mask], dtype=torch.uint8),
        "offsets": torch.cumsum(torch.tensor([0] + lengths, dtype=torch.int64), 0),
    }
    for name in samples[0][3]:
        tensors[name] = torch.cat([feats[name] for _, _, _, feats in samples]).contiguous()
    name = shard_file(index)
    with atomic_path(out_dir / name) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return {
        "file": name,
        "num_samples": len(samples),
        "num_tokens": sum(lengths),
        "sample_ids": [sid for sid, _, _, _ in samples],
        "sample_lengths": lengths,
    }


def capture(
    target_path: str | Path,
    tokens_path: str | Path,
    out_dir: str | Path,
    layer_ids: Sequence[int],
    *,
    max_length: int = 2048,
    shard_tokens: int = 65536,
    dtype: str = "bfloat16",
    device: str | None = None,
    model_dtype: str = "auto",
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Capture (or resume capturing) the target's features for the first `limit` samples of tokens_path."""
    from sglang_edsd.draft_config import DraftConfigError, TargetInfo

    target_path, tokens_path, out = Path(target_path), Path(tokens_path), Path(out_dir)
    try:
        info = TargetInfo.from_path(target_path)
    except DraftConfigError as e:
        raise CaptureError(str(e)) from None
    ids = check_layer_ids(layer_ids, info.num_hidden_layers)
    if dtype not in STORAGE_DTYPES:
        raise CaptureError(f"dtype (storage) must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    for name, value in (("max_length", max_length), ("shard_tokens", shard_tokens), ("limit", limit)):
        if value is not None and value < 1:
            raise CaptureError(f"{name} must be positive, got {value}")
    digest, samples = scan_tokens(tokens_path, info.vocab_size, max_length)
    samples = samples[:limit]
    wanted = new_manifest(asdict(info), target_path, ids, dtype, max_length, tokens_path, digest)
    manifest = load_manifest(out)
    if manifest is not None:
        check_resumable(manifest, wanted, out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        manifest = wanted
    done = manifest["num_samples"]
    if done > len(samples):
        raise CaptureError(
            f"{out} already holds {done} samples, more than the {len(samples)} asked for "
            f"(limit={limit}); use a larger limit or another output folder"
        )
    new_tokens = sum(n for _, n in samples[done:])
    if new_tokens:
        manifest["complete"] = False
        write_manifest(out, manifest)
        _capture_rest(
            target_path,
            tokens_path,
            out,
            manifest,
            info.vocab_size,
            len(samples),
            new_tokens,
            shard_tokens=shard_tokens,
            device=device,
            model_dtype=model_dtype,
            progress=progress,
        )
    manifest["complete"] = True
    write_manifest(out, manifest)
    return _stats(out, manifest, new_tokens)


def _capture_rest(
    target_path: Path,
    tokens_path: Path,
    out: Path,
    manifest: dict[str, Any],
    vocab_size: int,
    num_samples: int,
    new_tokens: int,
    *,
    shard_tokens: int,
    device: str | None,
    model_dtype: str,
    progress: bool,
) -> None:
    """Process samples manifest["num_samples"]..num_samples-1 in file order, one shard at a time."""
    model = load_target_model(target_path, device, model_dtype)
    storage = getattr(torch, manifest["storage_dtype"])
    pending: list[tuple[str, list[int], list[int], dict]] = []
    clock = time.perf_counter()

    def flush() -> None:
        nonlocal clock
        entry = _write_shard(out, len(manifest["shards"]), pending)
        manifest["shards"].append(entry)
        manifest["num_samples"] += entry["num_samples"]
        manifest["num_tokens"] += entry["num_tokens"]
        manifest["seconds"] += time.perf_counter() - clock
        clock = time.perf_counter()
        write_manifest(out, manifest)
        pending.clear()

    rows = islice(_read_tokens(tokens_path, vocab_size, manifest["max_length"]), manifest["num_samples"], num_samples)
    with tqdm(total=new_tokens, unit="tok", desc="capture", disable=not progress) as bar:
        for sid, ids, mask in rows:
            pending.append((sid, ids, mask, run_target(model, ids, manifest["layer_ids"], storage)))
            bar.update(len(ids))
            if sum(len(p[1]) for p in pending) >= shard_tokens:
                flush()
        if pending:
            flush()


def _stats(out: Path, manifest: dict[str, Any], new_tokens: int) -> dict[str, Any]:
    d, k, dtype = manifest["hidden_size"], len(manifest["layer_ids"]), manifest["storage_dtype"]
    tokens, seconds = manifest["num_tokens"], manifest["seconds"]
    disk = sum((out / s["file"]).stat().st_size for s in manifest["shards"])
    return {
        "out_dir": str(out),
        "samples": manifest["num_samples"],
        "tokens": tokens,
        "new_tokens": new_tokens,
        "shards": len(manifest["shards"]),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "bytes_per_token": bytes_per_token(d, k, dtype),
        "eagle3_bytes_per_token": bytes_per_token(d, 3, dtype),
        "disk_bytes_per_token": disk / tokens,
        "report": format_report(d, manifest["layer_ids"], dtype, disk / tokens),
    }
