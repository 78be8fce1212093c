"""`sglang-edsd prompts` and `sglang-edsd decontaminate`.

Wiring for the CLI owner::

    p = sub.add_parser("prompts", help="write the benchmark prompt sets (or your own) as jsonl")
    add_prompts_arguments(p)
    p.set_defaults(func=prompts_main)
    d = sub.add_parser("decontaminate", help="drop training conversations that contain benchmark prompts")
    add_decontaminate_arguments(d)
    d.set_defaults(func=decontaminate_main)

Both print errors as ``error: ...`` and exit with status 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_edsd.prompts.build import (
    ALL_TASKS,
    build_prompt_sets,
    load_prompts,
    load_user_prompts,
    select_subset,
    write_prompts,
)
from sglang_edsd.prompts.contamination import filter_contaminated
from sglang_edsd.prompts.sources import PromptError

_EXAMPLES = 3


def add_prompts_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `prompts` options to a (sub)parser."""
    parser.add_argument("--out", required=True, help="output folder; one <task>.jsonl per task")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=ALL_TASKS,
        default=list(ALL_TASKS),
        help="built-in tasks to write (default: all five)",
    )
    parser.add_argument(
        "--num-per-task",
        type=int,
        help="keep N prompts per task: the first N after a seeded shuffle, in source order (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset shuffle")
    parser.add_argument(
        "--from-file",
        metavar="F",
        help="your own prompts instead: jsonl with 'turns', 'prompt' or OpenAI 'messages', "
        "or a Hugging Face dataset folder (save_to_disk)",
    )
    parser.add_argument("--task-name", help="task name for --from-file (the output is <out>/<task-name>.jsonl)")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="with --from-file: read FIELD (id, turns, prompt, messages, reference) from COLUMN; repeatable",
    )
    parser.add_argument("--split", help="with --from-file on a dataset folder with several splits: the split")
    return parser


def _columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise PromptError(f"--column takes FIELD=COLUMN, got {pair!r}")
        columns[field] = column
    return columns


def prompts_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd prompts` (arguments from add_prompts_arguments)."""
    if args.from_file:
        if not args.task_name:
            raise PromptError("--from-file needs --task-name")
        records = load_user_prompts(args.from_file, args.task_name, _columns(args.column), args.split)
        records = select_subset(records, args.num_per_task, args.seed)
        paths = {args.task_name: write_prompts(records, Path(args.out) / f"{args.task_name}.jsonl")}
    else:
        if args.task_name or args.column or args.split:
            raise PromptError("--task-name, --column and --split only apply with --from-file")
        paths = build_prompt_sets(args.out, args.tasks, args.num_per_task, args.seed)
    for task, path in paths.items():
        records = load_prompts(path)
        turns = sum(len(r["turns"]) for r in records)
        refs = sum(r["reference"] is not None for r in records)
        print(f"{task}: {len(records)} prompts, {turns} turns, {refs} with a reference -> {path}")
    return 0


def add_decontaminate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `decontaminate` options to a (sub)parser."""
    parser.add_argument(
        "--data", required=True, help="training chat jsonl (ShareGPT 'conversations' or OpenAI 'messages' records)"
    )
    parser.add_argument("--prompts", required=True, help="prompt jsonl, or a folder of them (`sglang-edsd prompts`)")
    parser.add_argument(
        "--out", required=True, help="cleaned training jsonl; the matches go to <out>.contamination.json"
    )
    parser.add_argument(
        "--min-chars",
        type=int,
        default=40,
        help="evaluation turns shorter than this (normalised) only match a whole, equal user turn",
    )
    return parser


def decontaminate_main(args: argparse.Namespace) -> int:
    """Entry point for `sglang-edsd decontaminate` (arguments from add_decontaminate_arguments)."""
    prompts = load_prompts(args.prompts)
    stats = filter_contaminated(args.data, args.out, prompts, args.min_chars)
    by_task = ", ".join(f"{t} {n}" for t, n in stats["conversations_by_task"].items()) or "none"
    print(
        f"checked {stats['total']} conversations against {len(prompts)} prompts: removed {stats['removed']} "
        f"(by task: {by_task}), kept {stats['kept']} -> {stats['output']}"
    )
    if stats["removed"]:
        for m in stats["matches"][:_EXAMPLES]:
            print(
                f"  {m['train_id']} (line {m['train_line']}) ~ {m['prompt_id']} [{m['kind']}, "
                f"{m['overlap']:.0%}]: {m['matched_text'][:100]!r}"
            )
        print(f"all {stats['num_matches']} matches: {stats['report']}")
    return 0
