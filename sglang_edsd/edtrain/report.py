"""Training curves as PNGs: loss and per-step top-1 agreement (acceptance proxy) per phase, and
held-out agreement against tokens seen (the data-scaling curve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="weighted TTT loss", title="EDTrain loss")
    steps = max(len(h["acc_per_step"]) for h in history)
    for k in range(steps):
        pts = [(e, h["acc_per_step"][k]) for e, h in zip(epochs, history) if k < len(h["acc_per_step"])]
        ax_acc.plot(*zip(*pts), marker="o", label=f"step {k + 1}")
    ax_acc.set(xlabel="epoch", ylabel="top-1 agreement with target", title="acceptance proxy per draft step")
    ax_acc.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_evals(evals: list[dict[str, Any]], path: Path, label: str = "") -> Path:
    """Held-out top-1 agreement per draft step and the tau proxy against training tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = [e["tokens_seen"] / 1e6 for e in evals]
    fig, (ax_acc, ax_tau) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in range(len(evals[0]["agreement_per_step"])):
        ax_acc.plot(seen, [e["agreement_per_step"][k] for e in evals], marker="o", label=f"step {k + 1}")
    ax_acc.set(xlabel="training tokens seen (M)", ylabel="held-out top-1 agreement", title=f"{label} held out".strip())
    ax_acc.legend(fontsize=7)
    ax_tau.plot(seen, [e["tau_proxy"] for e in evals], marker="o")
    ax_tau.set(xlabel="training tokens seen (M)", ylabel="tau proxy (chain)", title="held-out tau proxy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scaling(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Several recipes' held-out curves in one figure (step-1 and last-step agreement, tau proxy
    against tokens seen): the data-scaling comparison. `runs` maps a label to its evals, in order
    (a continued run's evals appended to the run it continues)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_tau) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, evals in runs.items():
        seen = [e["tokens_seen"] / 1e6 for e in evals]
        last = len(evals[-1]["agreement_per_step"])
        line = ax_acc.plot(seen, [e["agreement_per_step"][0] for e in evals], marker="o", label=f"{label} step 1")
        ax_acc.plot(
            seen,
            [e["agreement_per_step"][last - 1] for e in evals],
            marker="s",
            linestyle="--",
            color=line[0].get_color(),
            label=f"{label} step {last}",
        )
        ax_tau.plot(seen, [e["tau_proxy"] for e in evals], marker="o", label=label)
    ax_acc.set(xlabel="training tokens seen (M)", ylabel="held-out top-1 agreement", title="held-out agreement")
    ax_acc.legend(fontsize=7)
    ax_tau.set(xlabel="training tokens seen (M)", ylabel="tau proxy (chain)", title="held-out tau proxy")
    ax_tau.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
