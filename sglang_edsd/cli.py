"""`sglang-edsd` command line: model assets, draft creation and the CPU demo."""

from __future__ import annotations

import argparse
import sys

from sglang_edsd.draft_config import DraftConfigError


def _cmd_fetch_smollm2(args: argparse.Namespace) -> None:
    from sglang_edsd.assets import smollm2_path

    print(smollm2_path())


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

    cfg = validate_draft_folder(args.draft, args.target)
    ids = list(cfg.layer_ids)
    print(f"OK: {cfg.architecture} draft, layer ids {ids} (HF hidden_states index {[i + 1 for i in ids]}), "
          f"expansion {cfg.expansion_size}, draft vocab {cfg.draft_vocab_size}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from sglang_edsd.demo import run_demo

    run_demo(num_prompts=args.num_prompts, max_tokens=args.max_tokens, draft=args.draft)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-edsd", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("fetch-smollm2", help="materialise SmolLM2-135M-Instruct as an HF folder (cached)")
    s.set_defaults(func=_cmd_fetch_smollm2)

    s = sub.add_parser("init-draft", help="write a random-initialised EDSD draft for a Llama/Qwen target")
    s.add_argument("--target", required=True, help="target model folder (HF format)")
    s.add_argument("--out", required=True, help="output draft folder")
    s.add_argument("--layer-ids", type=int, nargs="+", metavar="ID",
                   help="SGLang layer ids (id i = output of decoder layer i); default: EAGLE-3's mid/high ids "
                        "(EDSD takes two; EDSelect picks them once trained drafts exist)")
    s.add_argument("--eagle3", action="store_true",
                   help="write an EAGLE-3 baseline draft (fc over 3 layers) for SGLang's EAGLE3 instead")
    s.add_argument("--expansion", default="m", help="EDFuse width: m (target FFN size), d, 5d or an integer")
    s.add_argument("--draft-vocab-size", type=int, help="draft vocabulary size (default: full target vocab)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_init_draft)

    s = sub.add_parser("validate-draft", help="check a draft folder against a target, as SGLang start-up does")
    s.add_argument("--draft", required=True)
    s.add_argument("--target", help="target model folder")
    s.set_defaults(func=_cmd_validate_draft)

    from sglang_edsd.edselect.command import add_select_arguments, select_main

    s = sub.add_parser("select", help="EDSelect: pick two target layers by Curvature and LiDAR on a calibration set")
    add_select_arguments(s)
    s.set_defaults(func=select_main)

    s = sub.add_parser("demo", help="serve SmolLM2 with and without EDSD on CPU and compare")
    s.add_argument("--num-prompts", type=int, default=4)
    s.add_argument("--max-tokens", type=int, default=64)
    s.add_argument("--draft", help="EDSD draft folder (default: the embedded/random SmolLM2 draft)")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DraftConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
