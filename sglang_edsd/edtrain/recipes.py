"""Training recipes as one typed config plus named presets, so fair comparisons differ only
in the fields the comparison is about (no per-recipe code copies).

- `edsd`: EDArch (two EDSelect layers -> EDFuse) trained with EDTrain (Mask-p_t, Step-n_t).
- `eagle3`: the matched baseline: three layers at SGLang's default EAGLE-3 positions, `fc`
  instead of EDFuse, a fixed n = S_max training-time-test horizon and no entropy masking.
Ablations are flags on top of a recipe: no Mask-p, no Step-n, EDFuse width d/m/5d, no
token LayerNorm, other layer ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sglang_edsd.errors import EDSDError

RECIPES = ("edsd", "eagle3")


class TrainConfigError(EDSDError):
    """A training configuration that cannot run; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in every checkpoint)."""

    recipe: str = "edsd"
    layer_ids: tuple[int, ...] = ()  # SGLang ids; () = recipe default (edsd: the capture's two layers)
    input_module: str = "edfuse"
    expansion: str = "m"
    token_layernorm: bool = True
    draft_vocab_size: int = 8192
    epochs: int = 8  # T
    s_max: int = 7
    gamma: float = 3.0
    mask_p: bool = True
    step_n: bool = True
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    max_length: int = 2048
    step_weight: float = 0.8
    grad_clip: float = 0.5
    grad_accum: int = 1
    batch_tokens: int = 0  # pack samples up to this many tokens per micro-batch (0: one sample per micro-batch)
    token_budget: int = 0  # size the run in tokens: T curriculum phases of budget/T tokens each (0: T epochs)
    precision: str = "auto"  # bf16 autocast with fp32 master weights (and a bf16 online target), fp32, or auto
    init_layer: int = -1  # start the draft's decoder layer from this target layer (-1: random init)
    seed: int = 0
    checkpoint_every: int = 200  # optimizer steps between mid-epoch checkpoints (0: epoch ends only)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def validate(self) -> None:
        checks = {
            "recipe": self.recipe in RECIPES,
            "input_module": self.input_module in ("edfuse", "fc"),
            "draft_vocab_size": self.draft_vocab_size > 0,
            "epochs": self.epochs >= 1,
            "s_max": self.s_max >= 1,
            "gamma": 0 <= self.gamma and self.gamma * max(self.epochs - 1, 0) <= 100,
            "lr": self.lr > 0,
            "max_length": self.max_length >= 2,
            "grad_accum": self.grad_accum >= 1,
            "batch_tokens": self.batch_tokens >= 0,
            "token_budget": self.token_budget >= 0,
            "precision": self.precision in ("auto", "bf16", "fp32"),
            "init_layer": self.init_layer >= -1,
            "checkpoint_every": self.checkpoint_every >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise TrainConfigError(f"invalid training config field(s) {bad}: {self.describe(bad)}")
        if self.input_module == "edfuse" and self.layer_ids and len(self.layer_ids) != 2:
            raise TrainConfigError(f"EDFuse reads exactly two target layers, got layer_ids={list(self.layer_ids)}")

    def describe(self, names: list[str]) -> str:
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrainConfigError(f"unknown training config field(s): {unknown}")
        cfg = dict(raw)
        for tup in ("layer_ids", "betas"):
            if tup in cfg:
                cfg[tup] = tuple(cfg[tup])
        return cls(**cfg)


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """A named preset with field overrides applied on top (ablation flags)."""
    if name not in RECIPES:
        raise TrainConfigError(f"unknown recipe {name!r}; choose one of {list(RECIPES)}")
    base = TrainConfig(recipe=name)
    if name == "eagle3":
        base = replace(base, input_module="fc", mask_p=False, step_n=False)
    cfg = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    return cfg
