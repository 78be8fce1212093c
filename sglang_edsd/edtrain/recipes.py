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
from typing import Any, Literal, get_args

from sglang_edsd.errors import EDSDError

Recipe = Literal["edsd", "eagle3"]
InputModule = Literal["edfuse", "fc"]
Precision = Literal["auto", "bf16", "fp32"]
LrSchedule = Literal["constant", "cosine"]
RECIPES: tuple[str, ...] = get_args(Recipe)
PRECISIONS: tuple[str, ...] = get_args(Precision)


class TrainConfigError(EDSDError):
    """A training configuration that cannot run; the message names the field."""


def _f(default: Any, help: str, *, cli: bool = True) -> Any:
    """A config field with its `sglang-edsd train` help text (cli=False: set by the recipe only)."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata={"help": help, "cli": cli})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in every checkpoint). Each field is also
    a `sglang-edsd train` flag and a `--config` key of the same name (`edtrain/command.py`)."""

    recipe: Recipe = _f("edsd", "edsd: EDFuse + Mask-p + Step-n; eagle3: fc over SGLang's 3 default layers, n = S_max")
    layer_ids: tuple[int, ...] = _f((), "SGLang layer ids the draft reads (default: the recipe's)", cli=False)
    input_module: InputModule = _f("edfuse", "the draft's input module (set by the recipe)", cli=False)
    expansion: str = _f("m", "EDFuse width: m (target FFN size), d, 5d or an integer")
    token_layernorm: bool = _f(True, "ablation: EDFuse without the token LayerNorm")
    draft_vocab_size: int = _f(8192, "draft vocabulary size K (top-K target ids of the training data)")
    epochs: int = _f(8, "T in Eq. 5 and 6: epochs, or curriculum phases of a --token-budget run")
    s_max: int = _f(7, "S_max: final training-time-test horizon")
    gamma: float = _f(3.0, "Mask-p slope in percent per phase")
    mask_p: bool = _f(True, "ablation: no entropy masking (p_t = 0)")
    step_n: bool = _f(True, "ablation: fixed TTT horizon n = S_max")
    lr: float = _f(5e-5, "AdamW learning rate")
    lr_schedule: LrSchedule = _f("constant", "cosine: decay the lr to lr/10 over the run's tokens (after any warmup)")
    warmup_tokens: int = _f(0, "linear lr warmup over this many tokens")
    betas: tuple[float, float] = _f((0.9, 0.95), "AdamW betas", cli=False)
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_length: int = _f(2048, "tokens kept per sample")
    step_weight: float = _f(0.8, "loss weight decay per TTT step")
    grad_clip: float = _f(0.5, "gradient norm clip")
    grad_accum: int = _f(1, "micro-batches per optimizer step and rank")
    batch_tokens: int = _f(0, "pack samples into micro-batches of up to this many tokens (0: one sample each)")
    token_budget: int = _f(0, "size the run in tokens: T phases of budget/T tokens for Mask-p/Step-n (0: T epochs)")
    precision: Precision = _f("auto", "bf16: autocast, fp32 master weights, bf16 online target; auto: bf16 where fast")
    init_layer: int = _f(-1, "initialise the draft's decoder layer from this target decoder layer (-1: random)")
    init_draft: str = _f("", "warm start: every weight and the vocabulary from this exported draft folder")
    skip_tokens: int = _f(0, "start at this many tokens into the data stream (continue a warm-started run)")
    seed: int = _f(0, "seed of the init and the data order")
    checkpoint_every: int = _f(200, "optimizer steps between checkpoints, plus one at the end (0: at phase ends)")
    extra: dict[str, Any] = _f(dict, "free-form notes kept with the run", cli=False)

    def validate(self) -> None:
        checks = {
            "recipe": self.recipe in RECIPES,
            "input_module": self.input_module in get_args(InputModule),
            "draft_vocab_size": self.draft_vocab_size > 0,
            "epochs": self.epochs >= 1,
            "s_max": self.s_max >= 1,
            "gamma": 0 <= self.gamma and self.gamma * max(self.epochs - 1, 0) <= 100,
            "lr": self.lr > 0,
            "max_length": self.max_length >= 2,
            "grad_accum": self.grad_accum >= 1,
            "batch_tokens": self.batch_tokens >= 0,
            "token_budget": self.token_budget >= 0,
            "precision": self.precision in PRECISIONS,
            "init_layer": self.init_layer >= -1,
            "lr_schedule": self.lr_schedule in get_args(LrSchedule),
            "warmup_tokens": self.warmup_tokens >= 0,
            "skip_tokens": self.skip_tokens >= 0 and (not self.token_budget or self.skip_tokens < self.token_budget),
            "checkpoint_every": self.checkpoint_every >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise TrainConfigError(f"invalid training config field(s) {bad}: {self.describe(bad)}")
        if self.init_layer >= 0 and self.init_draft:
            raise TrainConfigError(
                f"init_layer={self.init_layer} and init_draft={self.init_draft!r} both set: a warm start "
                "takes every weight from the draft, so drop one"
            )
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
