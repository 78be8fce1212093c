"""`sglang-edsd prepare | regenerate | vocab`: the data steps of drafter training.

Wiring for the CLI owner::

    for name, add, main, help in [
        ("prepare", add_prepare_arguments, prepare_main, "chat data -> token ids + assistant loss mask"),
        ("regenerate", add_regenerate_arguments, regenerate_main, "re-answer a chat dataset with the target"),
        ("vocab", add_vocab_arguments, vocab_main, "draft vocabulary (top-K target tokens) -> d2t/t2d"),
    ]:
        s = sub.add_parser(name, help=help)
        add(s)
        s.set_defaults(func=main)

Each `*_main` prints errors as ``error: ...`` and exits with status 2 on bad input;
`regenerate_main` exits with status 1 when some conversations failed (they are listed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sglang_edsd.data.chat import DataError, load_conversations
from sglang_edsd.files import atomic_path
from sglang_edsd.hf_load import load_tokenizer


def _tokenizer(target: str) -> Any:
    return load_tokenizer(target, DataError)


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `prepare` options to a (sub)parser."""
    parser.add_argument("--target", required=True, help="target model folder (its tokenizer and chat template)")
    parser.add_argument(
        "--data",
        required=True,
        help="chat JSONL / JSON array ({'messages'|'conversations': [...]}) or a HF dataset folder",
    )
    parser.add_argument("--out", required=True, help="output token JSONL ({id, input_ids, loss_mask} per line)")
    parser.add_argument("--max-length", type=int, default=2048, help="keep the first N tokens of each conversation")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip conversations the chat template cannot render, listing them in <out>.skipped.jsonl",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def prepare_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd prepare`."""
    from sglang_edsd.data.chat import build_token_dataset

    stats = build_token_dataset(
        load_conversations(args.data),
        _tokenizer(args.target),
        args.out,
        max_length=args.max_length,
        progress=not args.no_progress,
        skip_invalid=args.skip_invalid,
    )
    share = stats["loss_tokens"] / stats["tokens"]
    print(
        f"wrote {args.out}: {stats['samples']} samples, {stats['tokens']} tokens, {stats['loss_tokens']} "
        f"loss-bearing ({share:.1%}), {stats['truncated']} truncated to {args.max_length}, "
        f"{len(stats['skipped_no_loss'])} skipped with no loss-bearing token, "
        f"{len(stats['skipped_invalid'])} skipped as unrenderable"
    )
    return 0


def add_regenerate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `regenerate` options to a (sub)parser."""
    parser.add_argument("--data", required=True, help="chat data (same formats as `prepare`)")
    parser.add_argument(
        "--out", required=True, help="output JSONL (appended in completion order; ids already in it are skipped)"
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:30000/v1", help="OpenAI-compatible server URL")
    parser.add_argument("--model", help="model name the server answers to (server mode)")
    parser.add_argument(
        "--local",
        metavar="MODEL_PATH",
        help="generate in-process with transformers from this HF folder, batched, instead of "
        "asking a server (on a 2-core CPU: 30.7 vs ~23 new tokens/s)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="--local: conversations per batched generate")
    parser.add_argument("--dtype", default="float32", help="--local: model dtype (float32|bfloat16|float16)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY", "EMPTY"),
        help="API key (default: $OPENAI_API_KEY or EMPTY)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, default=512, help="max new tokens per answer")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--system-prompt", help="replace the conversations' system turns with this one")
    parser.add_argument("--limit", type=int, help="only the first N conversations")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def regenerate_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd regenerate`."""
    from sglang_edsd.data.regenerate import regenerate
    from sglang_edsd.data.regenerate_local import regenerate_local

    common = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "system_prompt": args.system_prompt,
        "limit": args.limit,
        "progress": not args.no_progress,
    }
    if args.local:
        stats = regenerate_local(
            args.data, args.out, args.local, batch_size=args.batch_size, dtype=args.dtype, **common
        )
    elif args.model:
        stats = regenerate(
            args.data, args.out, args.base_url, args.model, concurrency=args.concurrency, api_key=args.api_key, **common
        )
    else:
        raise DataError("give --model (the server's model name) or --local MODEL_PATH")
    print(
        f"wrote {args.out}: {stats['done']} conversations regenerated, "
        f"{stats['skipped_existing']} already there, {len(stats['failed'])} failed"
    )
    for conv_id, error in stats["failed"]:
        print(f"failed: {conv_id}: {error}", file=sys.stderr)
    if stats["failed"]:
        print("error: some conversations failed; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def add_vocab_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `vocab` options to a (sub)parser."""
    parser.add_argument("--data", required=True, help="token JSONL written by `prepare`")
    parser.add_argument("--target", required=True, help="target model folder (its vocabulary size)")
    parser.add_argument("--size", type=int, default=8192, help="draft vocabulary size K")
    parser.add_argument("--out", required=True, help="output .safetensors (draft_to_target, d2t, t2d, counts)")
    return parser


def vocab_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd vocab`."""
    from safetensors.torch import save_file

    from sglang_edsd.data.chat import read_token_dataset
    from sglang_edsd.data.vocab import (
        count_loss_tokens,
        draft_vocab_maps,
        select_draft_vocab,
        vocab_coverage,
    )
    from sglang_edsd.draft_config import TargetInfo

    vocab_size = TargetInfo.from_path(args.target).vocab_size
    counts = count_loss_tokens(read_token_dataset(args.data), vocab_size)
    draft_to_target = select_draft_vocab(counts, args.size)
    coverage = vocab_coverage(counts, draft_to_target)
    tensors = {"draft_to_target": draft_to_target, "counts": counts, **draft_vocab_maps(draft_to_target, vocab_size)}
    out = Path(args.out)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp))
    seen = int((counts > 0).sum())
    print(
        f"wrote {out}: draft vocabulary {args.size} of {vocab_size} target ids covers {coverage:.2%} of "
        f"{int(counts.sum())} loss-bearing tokens ({seen} distinct ids seen)"
    )
    return 0


def add_subset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `subset` options to a (sub)parser."""
    parser.add_argument("--data", required=True, help="chat data (same formats as `prepare`)")
    parser.add_argument("--out", required=True, help="output chat JSONL ({id, messages} per line)")
    parser.add_argument("--num", type=int, required=True, help="conversations to keep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw order")
    parser.add_argument("--max-user-turns", type=int, default=2, help="keep at most this many user turns (+ answers)")
    parser.add_argument("--max-user-chars", type=int, default=4000, help="reject longer user turns")
    parser.add_argument("--min-ascii", type=float, default=0.95, help="reject user text with less ASCII than this")
    parser.add_argument(
        "--exclude",
        metavar="CHATS",
        action="append",
        default=[],
        help="skip conversations whose id appears in this chat file (e.g. a training subset, "
        "to draw held-out data); repeatable",
    )
    return parser


def subset_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd subset`."""
    from sglang_edsd.data.subset import chat_subset

    exclude = {conv.id for path in args.exclude for conv in load_conversations(path)}
    stats = chat_subset(
        args.data,
        args.out,
        args.num,
        seed=args.seed,
        max_user_turns=args.max_user_turns,
        max_user_chars=args.max_user_chars,
        min_ascii=args.min_ascii,
        exclude_ids=exclude,
    )
    print(f"wrote {args.out}: kept {stats['kept']} of {stats['examined']} examined; rejected {stats['rejected']}")
    return 0
