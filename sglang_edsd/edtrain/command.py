"""`sglang-edsd train`, `sglang-edsd export` and `sglang-edsd evaluate`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sglang_edsd.edtrain.recipes import RECIPES, TrainConfig, TrainConfigError, recipe

if TYPE_CHECKING:
    from sglang_edsd.edtrain.sources import OnlineData


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
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
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="edsd",
        help="edsd: EDFuse + Mask-p + Step-n; eagle3: fc over SGLang's 3 default layers, fixed n=S_max",
    )
    p.add_argument("--target", help="target folder (online: required; offline default: the capture's)")
    p.add_argument("--layer-ids", type=int, nargs="+", metavar="ID", help="SGLang layer ids the draft reads")
    p.add_argument("--layers-from", metavar="PATH", help="take layer ids from an EDSelect JSON or a draft folder")
    p.add_argument("--expansion", default=d.expansion, help="EDFuse width: m (target FFN size), d, 5d or an integer")
    p.add_argument("--no-token-layernorm", action="store_true", help="ablation: EDFuse without the token LayerNorm")
    p.add_argument("--no-mask-p", action="store_true", help="ablation: no entropy masking (p_t = 0)")
    p.add_argument("--no-step-n", action="store_true", help="ablation: fixed TTT horizon n = S_max")
    p.add_argument("--draft-vocab-size", type=int, default=d.draft_vocab_size)
    p.add_argument("--draft-vocab", metavar="FILE", help="precomputed vocabulary from `sglang-edsd vocab`")
    p.add_argument("--epochs", type=int, default=d.epochs, help="T in Eq. 5 and 6")
    p.add_argument("--s-max", type=int, default=d.s_max, help="S_max: final training-time-test horizon")
    p.add_argument("--gamma", type=float, default=d.gamma, help="Mask-p slope in percent per epoch")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--step-weight", type=float, default=d.step_weight, help="loss weight decay per TTT step")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=d.batch_tokens,
        help="pack samples into micro-batches of up to this many tokens (0: one sample each)",
    )
    p.add_argument(
        "--token-budget",
        type=int,
        default=d.token_budget,
        help="size the run in tokens: T phases of budget/T tokens for Mask-p/Step-n (0: --epochs epochs)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default=d.precision,
        help="bf16: autocast with fp32 master weights (and a bf16 online target); auto: bf16 where fast",
    )
    p.add_argument(
        "--init-layer",
        type=int,
        default=d.init_layer,
        help="initialise the draft's decoder layer from this target decoder layer (-1: random)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="optimizer steps between mid-epoch checkpoints (0: epoch ends only)",
    )
    p.add_argument("--stop-after-steps", type=int, help="stop (resumably) after this many optimizer steps")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-export", action="store_true", help="do not write <out>/draft at the end")
    p.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from sglang_edsd.capture.command import layer_ids_from_file

    layer_ids = tuple(args.layer_ids or (layer_ids_from_file(args.layers_from) if args.layers_from else ()))
    return recipe(
        args.recipe,
        layer_ids=layer_ids,
        expansion=args.expansion,
        token_layernorm=False if args.no_token_layernorm else None,
        mask_p=False if args.no_mask_p else None,
        step_n=False if args.no_step_n else None,
        draft_vocab_size=args.draft_vocab_size,
        epochs=args.epochs,
        s_max=args.s_max,
        gamma=args.gamma,
        lr=args.lr,
        weight_decay=args.weight_decay,
        max_length=args.max_length,
        step_weight=args.step_weight,
        grad_clip=args.grad_clip,
        grad_accum=args.grad_accum,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        batch_tokens=args.batch_tokens,
        token_budget=args.token_budget,
        precision=args.precision,
        init_layer=args.init_layer,
    )


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
