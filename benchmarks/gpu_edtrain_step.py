"""EDTrain's step loop on a tiny random target, in bf16, on one device: does the training math
run on CUDA (dtypes, RoPE, the training-time-test attention, soft CE, AdamW) and learn?

No capture, no SmolLM2, no SGLang: a random target config, random captured features and a
random target distribution stand in for a capture; the draft is `EDSDTrainDraft` and the loss
`make_labels` + `unroll_loss`, the public pieces the trainer uses. The same batch is trained on
every step, so the loss must fall. Prints one JSON line and writes it to --out.

    python benchmarks/gpu_edtrain_step.py --device cuda --out edtrain-step.json
    python benchmarks/gpu_edtrain_step.py --device cpu --steps 3      # CPU: only proves it runs
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from sglang_edsd.draft_config import EDSDDraftConfig, TargetInfo
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.objective import make_labels, unroll_loss

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# A Llama-shaped target small enough for any device; GQA (8 heads, 2 KV heads) like Llama-3.
TINY_TARGET = TargetInfo(
    architecture="LlamaForCausalLM",
    num_hidden_layers=8,
    hidden_size=256,
    vocab_size=4096,
    intermediate_size=688,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=4096,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps on the same batch")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--ttt-steps", type=int, default=4, help="training-time-test unroll depth")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    return p.parse_args(argv)


def make_batch(draft_vocab: int, n: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """A capture-shaped sample: features of two layers, ids, loss mask, target distribution."""
    t = TINY_TARGET
    draft_to_target = torch.randperm(t.vocab_size, generator=gen)[:draft_vocab].sort().values
    in_draft_vocab = torch.zeros(t.vocab_size, dtype=torch.bool)
    in_draft_vocab[draft_to_target] = True
    input_ids = draft_to_target[torch.randint(draft_vocab, (n,), generator=gen)]
    target_logits = torch.randn(n, draft_vocab, generator=gen) * 4  # peaked enough to learn
    top1 = draft_to_target[target_logits.argmax(-1)]
    probs = torch.softmax(target_logits, -1)
    batch = {
        "features": torch.randn(n, 2 * t.hidden_size, generator=gen),
        "input_ids": input_ids,
        "embed": torch.randn(t.vocab_size, t.hidden_size, generator=gen) * 0.02,
        "loss_mask": torch.ones(n, dtype=torch.bool),
        "entropy": -(probs * probs.clamp_min(1e-12).log()).sum(-1),
        "target_logits": target_logits,
        "top1": top1,
        "in_draft_vocab": in_draft_vocab,
        "draft_to_target": draft_to_target,
    }
    out = {k: v.to(device) for k, v in batch.items()}
    for k in ("features", "embed"):
        out[k] = out[k].to(dtype)
    return out


def run(args: argparse.Namespace) -> dict:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(0)
    cfg = EDSDDraftConfig(
        target=TINY_TARGET, layer_ids=(2, 5), expansion_size=2 * TINY_TARGET.hidden_size, draft_vocab_size=1024
    )
    model = EDSDTrainDraft(cfg)
    model.init_from_target(
        torch.randn(cfg.draft_vocab_size, TINY_TARGET.hidden_size, generator=gen) * 0.02,
        torch.ones(TINY_TARGET.hidden_size),
        seed=0,
    )
    model = model.to(device=device, dtype=dtype)
    batch = make_batch(cfg.draft_vocab_size, args.seq_len, device, dtype, gen)
    labels = make_labels(
        batch["target_logits"],
        batch["loss_mask"],
        batch["entropy"],
        batch["top1"],
        batch["in_draft_vocab"],
        mask_percent=0.0,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        logits = model(batch["features"], batch["input_ids"], batch["embed"], args.ttt_steps)
        loss, stats = unroll_loss(logits, labels, batch["draft_to_target"], step_weight=0.8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite loss in {losses}")
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "steps": args.steps,
        "seq_len": args.seq_len,
        "ttt_steps": args.ttt_steps,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "loss_fell": losses[-1] < losses[0],
        "step_ms_median": 1e3 * statistics.median(times[1:] or times),  # the first step warms up
        "first_step_ms": 1e3 * times[0],
        "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "last_step_agreement": [s.correct / max(s.scored, 1) for s in stats],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_edtrain_step: no CUDA device; pass --device cpu for a dry run", file=sys.stderr)
        return 2
    result = run(args)
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    if args.steps >= 10 and not result["loss_fell"]:
        print(
            f"gpu_edtrain_step: loss did not fall ({result['loss_first']:.4f} -> {result['loss_last']:.4f})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
