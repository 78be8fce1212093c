"""EDSelect's result: per-layer metrics, the chosen pair, JSON and a Fig. 4-style plot.

Every layer is reported under both numberings: SGLang id i (output of decoder layer i,
what `eagle_aux_hidden_state_layer_ids` holds) and HF ``hidden_states`` index i + 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sglang_edsd.edselect.select import LayerChoice

# (key, panel title, y-axis label); the two selection metrics come first.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("curvature", "Curvature (Hosseini & Fedorenko 2023)", "mean turning angle [rad]"),
    ("lidar", "LiDAR (Thilak et al. 2024)", "effective rank of LDA matrix"),
    ("prompt_entropy", "Prompt entropy (Skean et al. 2025)", "matrix entropy M1 [nats]"),
    ("dataset_entropy", "Dataset entropy (Skean et al. 2025)", "matrix entropy M1 [nats]"),
)

DEFINITIONS = {
    "layer_numbering": "sglang_id i = output of decoder layer i (0-based) = HF hidden_states[i + 1]; "
    "eligible ids 0..L-2 (SGLang cannot capture the last layer's output)",
    "token_positions": "the first token of every sequence is excluded (context-free attention sink "
    "with massive activations); all metrics use positions 1..T-1",
    "curvature": "Hosseini & Fedorenko 2023: mean over consecutive difference-vector pairs of "
    "arccos(cos(v_k, v_k+1)), v_k = x_k+1 - x_k, radians; averaged over prompts",
    "lidar": "Thilak et al. 2024: exp(entropy) of the normalised spectrum of "
    "Sigma_w^-1/2 Sigma_b Sigma_w^-1/2; classes = prompts, samples = token-augmented views, "
    "view embedding = mean of token states; Sigma_w + delta*tr(Sigma_w)/d*I",
    "prompt_entropy": "Skean et al. 2025 / EDSD Eq. 4: Shannon entropy of eig(Z Z^T)/tr for one prompt's "
    "token states Z, averaged over prompts",
    "dataset_entropy": "Skean et al. 2025 / EDSD Eq. 4: matrix entropy of the Gram of mean-pooled "
    "(un-augmented) prompt representations",
    "selection": "argmax Curvature and argmax LiDAR (EDSD Sec. 3.2; higher = better there, although "
    "Hosseini & Fedorenko read lower curvature as straighter); ties -> lowest id; if both "
    "peak at one layer, keep it and add the runner-up by LiDAR",
}


@dataclass
class EDSelectResult:
    """Per-layer metrics (indexed by SGLang id) and the chosen layers."""

    num_hidden_layers: int
    layer_ids: list[int]  # SGLang ids that were scored, ascending
    curvature: list[float]
    lidar: list[float]
    prompt_entropy: list[float]
    dataset_entropy: list[float]
    selected_layer_ids: tuple[int, int]
    curvature_layer: int
    lidar_layer: int
    tie_broken: bool
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metrics(
        cls,
        num_hidden_layers: int,
        metrics: dict[str, dict[int, float]],
        choice: LayerChoice,
        settings: dict[str, Any] | None = None,
    ) -> EDSelectResult:
        ids = sorted(metrics["lidar"])
        return cls(
            num_hidden_layers=num_hidden_layers,
            layer_ids=ids,
            **{key: [float(metrics[key][i]) for i in ids] for key, _, _ in METRICS},
            selected_layer_ids=choice.layer_ids,
            curvature_layer=choice.curvature_layer,
            lidar_layer=choice.lidar_layer,
            tie_broken=choice.tie_broken,
            settings=dict(settings or {}),
        )

    @property
    def hf_indices(self) -> list[int]:
        """HF ``hidden_states`` index of every scored layer (SGLang id + 1)."""
        return [i + 1 for i in self.layer_ids]

    @property
    def selected_hf_indices(self) -> tuple[int, int]:
        return (self.selected_layer_ids[0] + 1, self.selected_layer_ids[1] + 1)

    def metric(self, key: str) -> dict[int, float]:
        """One metric as {SGLang id: value}."""
        return dict(zip(self.layer_ids, getattr(self, key)))

    def summary(self) -> str:
        """A human-readable table plus the choice, in both numberings."""
        lines = [f"{'sglang_id':>9} {'hf_idx':>6} {'curvature':>10} {'lidar':>9} {'prompt_H':>9} {'dataset_H':>9}"]
        for n, i in enumerate(self.layer_ids):
            mark = (
                " <- "
                + "+".join(
                    name
                    for name, hit in (
                        ("curvature", i == self.curvature_layer),
                        ("lidar", i == self.lidar_layer),
                        ("selected", i in self.selected_layer_ids),
                    )
                    if hit
                )
                if i in self.selected_layer_ids or i in (self.curvature_layer, self.lidar_layer)
                else ""
            )
            lines.append(
                f"{i:>9} {i + 1:>6} {self.curvature[n]:>10.4f} {self.lidar[n]:>9.3f} "
                f"{self.prompt_entropy[n]:>9.3f} {self.dataset_entropy[n]:>9.3f}{mark}"
            )
        a, b = self.selected_layer_ids
        lines.append(
            f"EDSelect: SGLang layer ids [{a}, {b}] (HF hidden_states indices [{a + 1}, {b + 1}]); "
            f"max Curvature at id {self.curvature_layer}, max LiDAR at id {self.lidar_layer}"
            + ("; both peak at one layer, so the runner-up by LiDAR was added" if self.tie_broken else "")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "selected_layer_ids": list(self.selected_layer_ids),
            "selected_hf_hidden_states_indices": list(self.selected_hf_indices),
            "curvature_layer": self.curvature_layer,
            "lidar_layer": self.lidar_layer,
            "tie_broken": self.tie_broken,
            "num_hidden_layers": self.num_hidden_layers,
            "layers": [
                {
                    "sglang_id": i,
                    "hf_hidden_states_index": i + 1,
                    **{key: clean(getattr(self, key)[n]) for key, _, _ in METRICS},
                }
                for n, i in enumerate(self.layer_ids)
            ],
            "settings": self.settings,
            "definitions": DEFINITIONS,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EDSelectResult:
        layers = data["layers"]
        nan = float("nan")
        return cls(
            num_hidden_layers=int(data["num_hidden_layers"]),
            layer_ids=[int(x["sglang_id"]) for x in layers],
            **{key: [nan if x[key] is None else float(x[key]) for x in layers] for key, _, _ in METRICS},
            selected_layer_ids=tuple(data["selected_layer_ids"]),
            curvature_layer=int(data["curvature_layer"]),
            lidar_layer=int(data["lidar_layer"]),
            tie_broken=bool(data["tie_broken"]),
            settings=dict(data.get("settings", {})),
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> EDSelectResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Metric vs layer, one panel per metric, the selected layers marked (cf. EDSD Fig. 4)."""
        from matplotlib.figure import (
            Figure,  # no pyplot: no global backend state is touched
        )

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(4.2 * len(METRICS), 3.6), constrained_layout=True)
        axes = fig.subplots(1, len(METRICS))
        peaks = {"curvature": self.curvature_layer, "lidar": self.lidar_layer}
        for ax, (key, name, unit) in zip(axes, METRICS):
            values = getattr(self, key)
            ax.plot(self.layer_ids, values, marker="o", markersize=3, color="tab:blue")
            for i in self.selected_layer_ids:
                ax.axvline(i, color="tab:red", linestyle="--", linewidth=1)
            if key in peaks:
                i = peaks[key]
                ax.plot(
                    [i],
                    [values[self.layer_ids.index(i)]],
                    marker="*",
                    markersize=14,
                    color="tab:red",
                    label=f"max at id {i} (HF {i + 1})",
                )
                ax.legend(loc="best", fontsize=8)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("SGLang layer id (output of decoder layer i)")
            ax.set_ylabel(unit)
            top = ax.secondary_xaxis("top", functions=(lambda x: x + 1, lambda x: x - 1))
            top.set_xlabel("HF hidden_states index", fontsize=8)
            ax.grid(alpha=0.3)
        a, b = self.selected_layer_ids
        fig.suptitle(
            (title + ": " if title else "")
            + f"EDSelect -> SGLang ids [{a}, {b}] (HF hidden_states [{a + 1}, {b + 1}]), "
            f"L={self.num_hidden_layers}",
            fontsize=11,
        )
        fig.savefig(path, dpi=120)
        return path
