"""Training curves as a PNG: loss and per-step top-1 agreement (acceptance proxy) per epoch."""

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
