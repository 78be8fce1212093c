"""Online EDTrain at a target's real shape, EDSD against EAGLE-3, with no download.

The target is built from its config with random weights on the training device, and only
its embedding, final norm and lm_head are written to a scratch folder (what the trainer's
frozen head reads); the data are random token ids. Both recipes then train online
(`sglang_edsd.edtrain.trainer.train`, the `sglang-edsd train --online` loop) on the same
data with the same budget, so the comparison holds everything but the recipe. Speed does not
depend on what the weights or tokens are, only on their shapes.

Reported per recipe: tokens/s of the loop (all phases, and the last phases alone, past the
warm-up), where the time goes (the loop's target forward, the rest of the loop, checkpoints,
set-up, wall), the phase time against the training-time-test depth, and peak device memory.

    python benchmarks/bench_edtrain_scale.py --shape llama3-8b --device cuda   # GPU, ~3 min
    python benchmarks/bench_edtrain_scale.py --shape tiny --device cpu         # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import torch
from safetensors.torch import save_file

from sglang_edsd.capture.packed import packed_target_features, use_packed_attention
from sglang_edsd.edtrain import recipe
from sglang_edsd.edtrain.sources import OnlineData
from sglang_edsd.edtrain.trainer import train

# Target shapes (transformers LlamaConfig fields) and each shape's run defaults.
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": {
        "config": {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "rope_theta": 500000.0,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
        },
        "edsd_layers": (3, 17),
        "lengths": (256, 2048),
        "run": {"token_budget": 200_000, "batch_tokens": 8192, "draft_vocab_size": 32768, "max_length": 2048},
    },
    "tiny": {
        "config": {
            "hidden_size": 128,
            "intermediate_size": 344,
            "num_hidden_layers": 8,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 2048,
            "rope_theta": 500000.0,
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5,
        },
        "edsd_layers": (1, 3),
        "lengths": (24, 96),
        "run": {"token_budget": 3000, "batch_tokens": 400, "draft_vocab_size": 512, "max_length": 256},
    },
}
RECIPES = ("eagle3", "edsd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--token-budget", type=int, default=None, help="tokens per recipe (default: the shape's)")
    p.add_argument("--phases", type=int, default=8, help="curriculum phases T (Step-n grows 1 -> --s-max)")
    p.add_argument("--s-max", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="JSON result; .md and .png are written next to it")
    p.add_argument("--report-only", type=Path, default=None, help="rewrite the .md and .png of this result JSON")
    return p.parse_args(argv)


def build_target(shape: dict[str, Any], folder: Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight Llama on `device`; its config and frozen head tensors go to `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape["config"], tie_word_embeddings=False)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    head = {
        "model.embed_tokens.weight": model.model.embed_tokens.weight,
        "model.norm.weight": model.model.norm.weight,
        "lm_head.weight": model.lm_head.weight,
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, str(folder / "model.safetensors"))
    return model


def write_tokens(path: Path, shape: dict[str, Any], tokens: int, seed: int) -> None:
    """Random samples with lengths uniform in the shape's range until `tokens` are written
    (one data epoch covers the budget); the first fifth of each is prompt (no loss)."""
    gen = torch.Generator().manual_seed(seed)
    low, high = shape["lengths"]
    vocab = shape["config"]["vocab_size"]
    written, k = 0, 0
    with path.open("w") as f:
        while written < tokens:
            n = int(torch.randint(low, high + 1, (1,), generator=gen))
            ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
            mask = [0] * (n // 5) + [1] * (n - n // 5)
            f.write(json.dumps({"id": f"r{k}", "input_ids": ids, "loss_mask": mask}) + "\n")
            written, k = written + n, k + 1


def compare_target_forward(
    model: torch.nn.Module, tokens: Path, batch_tokens: int, layer_ids: tuple[int, ...], repeats: int = 2
) -> dict[str, Any]:
    """The online target forward over one micro-batch: once per sample (before) against once
    per packed micro-batch (now), best of `repeats` after a warm-up, and how far apart their
    features are."""
    samples, used = [], 0
    for line in tokens.read_text().splitlines():
        ids = torch.tensor(json.loads(line)["input_ids"])
        if samples and used + ids.numel() > batch_tokens:
            break
        samples.append(ids)
        used += ids.numel()
    use_packed_attention(model)
    storage = next(model.parameters()).dtype
    device = next(model.parameters()).device

    def timed(fn: Any) -> tuple[float, list[dict[str, torch.Tensor]]]:
        best, out = float("inf"), []
        for _ in range(repeats + 1):  # the first call warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best, out

    alone_s, alone = timed(lambda: [packed_target_features(model, [s], layer_ids, storage)[0] for s in samples])
    packed_s, packed = timed(lambda: packed_target_features(model, samples, layer_ids, storage))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for a, b in zip(alone, packed) for k in a)
    return {
        "samples": len(samples),
        "tokens": used,
        "per_sample_seconds": round(alone_s, 4),
        "packed_seconds": round(packed_s, 4),
        "per_sample_tokens_per_s": round(used / alone_s, 1),
        "packed_tokens_per_s": round(used / packed_s, 1),
        "speedup": round(alone_s / packed_s, 2),
        "max_abs_feature_difference": diff,
        "top1_agreement": sum(int((a["target_top1"] == b["target_top1"]).sum()) for a, b in zip(alone, packed)) / used,
    }


def run_recipe(name: str, args: argparse.Namespace, shape: dict[str, Any], data: OnlineData, out: Path) -> dict:
    run = {**shape["run"], "token_budget": args.token_budget or shape["run"]["token_budget"]}
    layers = {"layer_ids": shape["edsd_layers"]} if name == "edsd" else {}
    cfg = recipe(name, epochs=args.phases, s_max=args.s_max, precision=args.precision, seed=args.seed, **run, **layers)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    summary = train(cfg, data, out, device=args.device, progress=True, export=False)
    history = summary["history"]
    steady = history[len(history) // 2 :]
    loop = summary["train_seconds"]
    result = {
        "recipe": name,
        "layer_ids": list(summary["config"]["layer_ids"]),
        "tokens": summary["tokens_seen"],
        "loop_seconds": loop,
        "tokens_per_s": round(summary["tokens_seen"] / loop, 1),
        "steady_tokens_per_s": round(sum(h["tokens"] for h in steady) / sum(h["seconds"] for h in steady), 1),
        "target_forward_seconds": summary["source_seconds"],
        "target_forward_share": round(summary["source_seconds"] / loop, 3),
        "checkpoints": summary["checkpoints"],
        "checkpoint_seconds": summary["checkpoint_seconds"],
        "setup_seconds": summary["setup_seconds"],
        "loop_wall_seconds": summary["loop_wall_seconds"],
        "wall_seconds": summary["wall_seconds"],
        "loop_wall_over_loop": round(summary["loop_wall_seconds"] / loop, 3),
        "wall_over_loop": round(summary["wall_seconds"] / loop, 3),
        "phases": [
            {k: h[k] for k in ("epoch", "num_steps", "mask_percent", "tokens", "seconds", "source_seconds")}
            for h in history
        ],
    }
    if args.device.startswith("cuda"):
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return result


def write_report(result: dict[str, Any], out: Path) -> None:
    harness.write_json(out, result)
    rows = [
        [
            r["recipe"],
            r["tokens"],
            r["loop_seconds"],
            r["tokens_per_s"],
            r["steady_tokens_per_s"],
            r["target_forward_share"],
            r["checkpoints"],
            r["checkpoint_seconds"],
            r["setup_seconds"],
            r["loop_wall_over_loop"],
            r["wall_over_loop"],
            r.get("peak_memory_gib"),
        ]
        for r in result["recipes"]
    ]
    header = ["recipe", "tokens", "loop s", "tok/s", "steady tok/s", "target fwd share", "ckpts", "ckpt s"]
    header += ["setup s", "loop wall / loop", "wall / loop", "peak GiB"]
    lines = [
        f"# Online EDTrain at {result['shape']} shape ({result['device']}, {result['precision']})",
        "",
        f"`{result['command']}` at {result['git_commit']}, {result['started']}; torch {result['torch']}.",
        "",
        harness.markdown_table(header, rows),
        "",
    ]
    if "target_forward" in result:
        t = result["target_forward"]
        lines.append(
            f"Target forward over one micro-batch ({t['samples']} samples, {t['tokens']} tokens): "
            f"{t['per_sample_tokens_per_s']} tok/s once per sample, {t['packed_tokens_per_s']} tok/s packed "
            f"({t['speedup']}x); features differ by at most {t['max_abs_feature_difference']:.3g}, "
            f"top-1 agrees on {t['top1_agreement']:.4f} of tokens."
        )
        lines.append("")
    if "edsd_over_eagle3_loop" in result:
        lines.append(
            f"EDSD loop / EAGLE-3 loop at equal tokens: {result['edsd_over_eagle3_loop']:.3f} "
            f"(steady phases: {result['edsd_over_eagle3_steady']:.3f})."
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(result, out.with_suffix(".png"))


def _plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the GPU machine may lack it: --report-only redraws from the JSON
        print(f"matplotlib is not installed: no {path.name}")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for r in result["recipes"]:
        phases = r["phases"][1:]  # phase 1 holds the warm-up
        left.plot(
            [h["num_steps"] for h in phases], [h["tokens"] / h["seconds"] for h in phases], "o-", label=r["recipe"]
        )
    left.set(
        xlabel="TTT steps in the phase", ylabel="loop tokens/s", title="Phase speed against TTT depth (phase 2 on)"
    )
    left.legend()
    names = [r["recipe"] for r in result["recipes"]]
    parts = {
        "target forward": [r["target_forward_seconds"] for r in result["recipes"]],
        "draft step": [r["loop_seconds"] - r["target_forward_seconds"] for r in result["recipes"]],
        "checkpoints (blocking)": [r["checkpoint_seconds"] for r in result["recipes"]],
        "set-up and other": [
            r["wall_seconds"] - r["loop_seconds"] - r["checkpoint_seconds"] for r in result["recipes"]
        ],
    }
    bottom = [0.0] * len(names)
    for label, values in parts.items():
        right.bar(names, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set(ylabel="seconds", title="Where the wall time goes")
    right.legend(fontsize=8)
    fig.suptitle(f"Online EDTrain, {result['shape']} target, {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        write_report(json.loads(args.report_only.read_text()), args.report_only)
        return 0
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    shape = SHAPES[args.shape]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out or harness.RESULTS / f"edtrain-scale-{args.shape}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="edtrain-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    built = time.perf_counter()
    model = build_target(shape, work / "target", args.device, dtype)
    tokens = work / "tokens.jsonl"
    write_tokens(tokens, shape, args.token_budget or shape["run"]["token_budget"], args.seed)
    result: dict[str, Any] = {
        "benchmark": "edtrain-scale",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": harness.git_commit(),
        "hardware": harness.hardware(),
        "torch": torch.__version__,
        "shape": args.shape,
        "target_config": shape["config"],
        "device": args.device,
        "precision": args.precision,
        "phases": args.phases,
        "s_max": args.s_max,
        "target_build_seconds": round(time.perf_counter() - built, 1),
        "recipes": [],
    }
    result["target_forward"] = compare_target_forward(
        model, tokens, shape["run"]["batch_tokens"], tuple(sorted({*shape["edsd_layers"], 2}))
    )
    write_report(result, out)
    data = OnlineData(tokens, work / "target", model=model)
    for name in RECIPES:  # written after each recipe: a timed-out run keeps what finished
        result["recipes"].append(run_recipe(name, args, shape, data, work / f"run-{name}"))
        write_report(result, out)
    by = {r["recipe"]: r for r in result["recipes"]}
    result["edsd_over_eagle3_loop"] = round(by["edsd"]["loop_seconds"] / by["eagle3"]["loop_seconds"], 3)
    result["edsd_over_eagle3_steady"] = round(
        by["eagle3"]["steady_tokens_per_s"] / by["edsd"]["steady_tokens_per_s"], 3
    )
    write_report(result, out)
    print(json.dumps({k: v for k, v in result.items() if k != "target_config"}, default=str)[:4000])
    print(f"wrote {out} (+ .md, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
