"""`sglang-edsd calibrate-stop`: the entropy-stop threshold from held-out data and a round cost model.

Over a capture of held-out text (`sglang-edsd capture`), the served draft is unrolled as in
training (step k of row i proposes token i+2+k; `easd.calibrate.load_draft`), and every answer
position with S steps ahead gives: the draft's entropy at each step and how many of the S
proposals a greedy chain verify would accept (leading agreement with the target's top-1). A
threshold t keeps kept_steps(entropy, t) proposals, so a round emits min(accepted, kept) + 1
tokens and, at batch 1 on an eager backend, runs kept - 1 draft steps and verifies kept + 1 rows
(the stop cuts the round's chain) instead of S - 1 and S + 1. With a round cost of
`fixed_ms + step_ms * (kept - 1)` (benchmarks/cost_model.py measures the parts), the threshold
that maximises tokens per millisecond is chosen and compared with the full chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sglang_edsd.capture.reader import CaptureReader
from sglang_edsd.easd.calibrate import load_draft
from sglang_edsd.easd.rule import entropy_and_top
from sglang_edsd.edtrain.target_head import TargetHead
from sglang_edsd.entropy_stop import SIDECAR, kept_steps
from sglang_edsd.entropy_stop_command import FIXED_MS, STEP_MS
from sglang_edsd.files import write_text_atomic


def chain_positions(
    model: Any, d2t: torch.Tensor, head: TargetHead, sample: dict[str, Any], steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draft entropy [P, steps] and greedy accepted length [P] at the sample's answer positions
    that have `steps` tokens ahead."""
    ids, n = sample["input_ids"], int(sample["input_ids"].shape[0])
    rows = torch.arange(max(n - 1 - steps, 0))
    keep = sample["loss_mask"].bool()[rows + 2] if rows.numel() else rows.bool()
    rows = rows[keep]
    if rows.numel() == 0:
        return torch.zeros(0, steps), torch.zeros(0, dtype=torch.long)
    features = torch.cat([sample["hidden"][i] for i in model.config.layer_ids], dim=-1).float()
    target_top = (head.final_norm(sample["final_hidden"]) @ head.lm_head.T).argmax(-1)  # row j: token j+1
    entropy, agree = [], []
    for k, logits in enumerate(model(features, ids, head.embed, steps)):
        h, top = entropy_and_top(logits[rows], 1)
        entropy.append(h)
        agree.append(d2t[top[:, 0]] == target_top[rows + 1 + k])
    accepted = torch.stack(agree, 1).int().cumprod(1).sum(1)
    return torch.stack(entropy, 1), accepted


def choose_threshold(
    entropy: torch.Tensor, accepted: torch.Tensor, fixed_ms: float, step_ms: float, grid: int = 41
) -> dict[str, Any]:
    """Tokens per ms of every candidate threshold: 0 (stop after step 1: a stop keeps the step
    that crosses), quantiles of the entropies, and inf (no stop)."""
    steps = entropy.shape[1]
    quantiles = entropy.flatten().quantile(torch.linspace(0, 1, grid)).tolist()
    candidates = sorted({0.0, *quantiles, float("inf")})
    rows = []
    for t in candidates:
        kept = kept_steps(entropy, t).long()
        tokens = float((torch.minimum(accepted, kept) + 1).float().mean())
        ms = fixed_ms + step_ms * float((kept - 1).float().mean())
        rows.append(
            {"threshold": t, "tokens_per_round": tokens, "draft_steps": float(kept.float().mean()) - 1, "ms": ms}
        )
    static = rows[-1]
    for r in rows:
        r["speedup_vs_full_chain"] = (r["tokens_per_round"] / r["ms"]) / (static["tokens_per_round"] / static["ms"])
    best = max(rows, key=lambda r: r["speedup_vs_full_chain"])
    return {"steps": steps, "best": best, "full_chain": static, "candidates": rows}


def acceptance_by_entropy(entropy: torch.Tensor, accepted: torch.Tensor, bins: int = 10) -> list[dict[str, Any]]:
    """Per step k: the share accepted among positions whose chain reached step k, by entropy decile."""
    out = []
    for k in range(entropy.shape[1]):
        reached = accepted >= k
        h, ok = entropy[reached, k], (accepted[reached] > k)
        if h.numel() == 0:
            continue
        edges = h.quantile(torch.linspace(0, 1, bins + 1))
        which = torch.bucketize(h, edges[1:-1])
        for b in range(bins):
            sel = which == b
            if sel.any():
                out.append({"step": k + 1, "entropy": float(h[sel].mean()), "accept": float(ok[sel].float().mean())})
    return out


def calibrate_stop(
    draft_path: str | Path,
    capture_dir: str | Path,
    *,
    steps: int = 4,
    fixed_ms: float = FIXED_MS,
    step_ms: float = STEP_MS,
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    reader = CaptureReader(capture_dir)
    target_path = Path(reader.manifest["target_path"])
    model, d2t = load_draft(Path(draft_path), target_path)
    reader.require_layers(model.config.layer_ids, f"draft {draft_path}")
    head = TargetHead.load(target_path)
    count = len(reader) if max_samples is None else min(max_samples, len(reader))
    entropies, accepted = [], []
    with torch.no_grad():
        for i in tqdm(range(count), desc="calibrate stop", unit="sample", disable=not progress):
            h, a = chain_positions(model, d2t, head, reader[i], steps)
            entropies.append(h)
            accepted.append(a)
    entropy, acc = torch.cat(entropies), torch.cat(accepted)
    if entropy.shape[0] == 0:
        raise ValueError(f"{capture_dir}: no answer position with {steps} tokens ahead in {count} samples")
    choice = choose_threshold(entropy, acc, fixed_ms, step_ms)
    return {
        "threshold": choice["best"]["threshold"],
        "draft": str(draft_path),
        "capture": str(capture_dir),
        "samples": count,
        "positions": int(entropy.shape[0]),
        "fixed_ms": fixed_ms,
        "step_ms": step_ms,
        **choice,
        "acceptance_by_entropy": acceptance_by_entropy(entropy, acc),
    }


def write_sidecar(report: dict[str, Any], draft_path: Path) -> Path:
    """`entropy_stop.json` in the draft folder: the threshold and how it was chosen."""
    keep = ("threshold", "steps", "capture", "samples", "positions", "fixed_ms", "step_ms", "best", "full_chain")
    path = draft_path / SIDECAR
    write_text_atomic(path, json.dumps({k: report[k] for k in keep}, indent=2) + "\n")
    return path


def plot_acceptance(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k in sorted({r["step"] for r in report["acceptance_by_entropy"]}):
        pts = [r for r in report["acceptance_by_entropy"] if r["step"] == k]
        ax.plot([r["entropy"] for r in pts], [r["accept"] for r in pts], "o-", label=f"step {k}")
    if report["threshold"] != float("inf"):
        ax.axvline(report["threshold"], color="k", ls="--", lw=1, label="chosen threshold")
    ax.set(
        xlabel="draft entropy (nats, draft vocabulary)",
        ylabel="accepted (given the chain reached the step)",
        title="Per-step acceptance against draft entropy (held-out capture)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
