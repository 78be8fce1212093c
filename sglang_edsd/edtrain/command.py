"""`sglang-edsd train`, `sglang-edsd export` and `sglang-edsd evaluate`."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, get_args, get_type_hints

from sglang_edsd.edtrain.recipes import TrainConfig, TrainConfigError, recipe

if TYPE_CHECKING:
    from sglang_edsd.edtrain.sources import OnlineData


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--capture", help="offline: capture folder written by `sglang-edsd capture`")
    p.add_argument(
        "--online",
        action="store_true",
        help="online: run the target (--target) inside the loop over --data; nothing but checkpoints on disk",
    )
    p.add_argument("--data", help="online: token JSONL from `sglang-edsd prepare`")
    p.add_argument(
        "--heldout",
        metavar="PATH",
        help="held-out data scored during training (a capture folder, or with --online a token JSONL)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="TOKENS",
        help="score --heldout every this many training tokens (always at the start and the end)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder: checkpoint.pt, history.jsonl, curves.png, evals.jsonl, heldout.png, draft/",
    )
    p.add_argument("--target", help="target folder (online: required; offline default: the capture's)")
    p.add_argument("--layer-ids", type=int, nargs="+", metavar="ID", help="SGLang layer ids the draft reads")
    p.add_argument("--layers-from", metavar="PATH", help="take layer ids from an EDSelect JSON or a draft folder")
    p.add_argument("--draft-vocab", metavar="FILE", help="precomputed vocabulary from `sglang-edsd vocab`")
    add_config_arguments(p)
    p.add_argument("--stop-after-steps", type=int, help="stop (resumably) after this many optimizer steps")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-export", action="store_true", help="do not write <out>/draft at the end")
    p.add_argument("--no-progress", action="store_true")


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, named, typed and described by the field itself: booleans
    that default to on become `--no-<name>` (None unless given, so a recipe's own value stands)."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if not f.metadata["cli"]:
            continue
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if hints[f.name] is bool:
            p.add_argument("--no-" + flag[2:], dest=f.name, action="store_const", const=False, help=help_text)
        elif get_args(hints[f.name]):
            p.add_argument(flag, choices=get_args(hints[f.name]), default=f.default, help=help_text)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from sglang_edsd.capture.command import layer_ids_from_file

    layer_ids = tuple(args.layer_ids or (layer_ids_from_file(args.layers_from) if args.layers_from else ()))
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.metadata["cli"]}
    return recipe(values.pop("recipe"), layer_ids=layer_ids, **values)


def data_from_args(args: argparse.Namespace) -> tuple[str | OnlineData, str | OnlineData | None]:
    """(training data, held-out data): capture folders offline, `OnlineData` with --online."""
    from sglang_edsd.edtrain.sources import OnlineData

    if args.online:
        if not args.data or not args.target:
            raise TrainConfigError("--online needs --data (a token JSONL from `sglang-edsd prepare`) and --target")
        if args.capture:
            raise TrainConfigError("--online trains from --data; drop --capture (or drop --online to train offline)")
        held = OnlineData(Path(args.heldout), Path(args.target)) if args.heldout else None
        return OnlineData(Path(args.data), Path(args.target)), held
    if not args.capture:
        raise TrainConfigError("give --capture (offline training) or --online --data TOKENS --target T")
    return args.capture, args.heldout


def train_main(args: argparse.Namespace) -> None:
    from sglang_edsd.edtrain.trainer import train

    data, heldout = data_from_args(args)
    summary = train(
        config_from_args(args),
        data,
        args.out,
        target_path=args.target,
        draft_vocab=args.draft_vocab,
        device=args.device,
        progress=not args.no_progress,
        stop_after_steps=args.stop_after_steps,
        export=not args.no_export,
        heldout=heldout,
        eval_every=args.eval_every,
    )
    if summary["stopped"]:
        print(
            f"stopped at data epoch {summary['epoch'] + 1}, micro-batch {summary['position']} "
            f"({summary['tokens_seen']} tokens seen); run the same command to resume"
        )
    elif "draft" in summary:
        print(f"trained in {summary['train_seconds']} s; draft: {summary['draft']}")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder of `sglang-edsd train`")
    p.add_argument("--out", required=True, help="draft folder to write")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--target", help="target folder to validate against")


def export_main(args: argparse.Namespace) -> None:
    from sglang_edsd.edtrain.export import export_draft

    print(export_draft(args.run, args.out, dtype=args.dtype, target_path=args.target))


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder of `sglang-edsd train`")
    p.add_argument("--capture", help="capture of held-out data holding the run's layers")
    p.add_argument("--data", help="or: held-out token JSONL (`sglang-edsd prepare`), run online through --target")
    p.add_argument("--steps", type=int, help="TTT steps to score (default: the run's S_max)")
    p.add_argument("--target", help="target folder (online: required; offline default: the capture's)")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--no-progress", action="store_true")


def evaluate_main(args: argparse.Namespace) -> None:
    from sglang_edsd.edtrain.evaluate import evaluate_run
    from sglang_edsd.edtrain.sources import OnlineData

    if bool(args.capture) == bool(args.data) or (args.data and not args.target):
        raise TrainConfigError("give --capture CAPTURE, or --data TOKENS --target T (online)")
    data = args.capture or OnlineData(Path(args.data), Path(args.target))
    result = evaluate_run(args.run, data, steps=args.steps, target_path=args.target, progress=not args.no_progress)
    print(
        f"{args.run} on {result['capture']} ({result['samples']} samples): top-1 agreement per step "
        f"{[round(a, 3) for a in result['agreement_per_step']]}, tau proxy {result['tau_proxy']:.3f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
