"""The EDSD draft format: config schema, tensor manifest and target compatibility checks.

A draft folder holds `config.json` (a Llama-style HF config plus `eagle_config` and
`edsd_config`) and safetensors weights. Everything that validates a draft — server-arg
validation, the strict SGLang loader, the exporter — reads the rules from here, so a
bad draft is rejected with the same message wherever it is first seen.

Layer ids follow SGLang: id i is the OUTPUT of target decoder layer i (0-based), valid
ids are 0 .. L-2 for a target with L decoder layers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sglang_edsd.errors import EDSDError

EDSD_ARCHITECTURE = "LlamaForCausalLMEDSD"
EAGLE3_ARCHITECTURE = "LlamaForCausalLMEagle3"
# The draft's input module: EDFuse (EDSD) or EAGLE-3's single `fc` (the baseline recipe).
INPUT_MODULES = {"edfuse": EDSD_ARCHITECTURE, "fc": EAGLE3_ARCHITECTURE}
FORMAT_VERSION = 1
# Tensors that may be absent: SGLang shares the target's embedding with the draft, and
# `t2d` is informational (SGLang only reads `d2t`).
OPTIONAL_TENSORS = frozenset({"embed_tokens.weight", "t2d"})


class DraftConfigError(EDSDError):
    """A draft folder that cannot serve the given target; the message names the problem."""


@dataclass(frozen=True)
class TargetInfo:
    """The facts about a target that a draft is built against."""

    architecture: str
    num_hidden_layers: int
    hidden_size: int
    vocab_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any], source: str = "target config") -> TargetInfo:
        cfg = cfg.get("text_config", cfg)
        try:
            heads = int(cfg["num_attention_heads"])
            rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
            return cls(
                architecture=(cfg.get("architectures") or ["?"])[0],
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                hidden_size=int(cfg["hidden_size"]),
                vocab_size=int(cfg["vocab_size"]),
                intermediate_size=int(cfg["intermediate_size"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
            )
        except KeyError as e:
            raise DraftConfigError(f"{source}: missing field {e.args[0]!r}") from None

    @classmethod
    def from_path(cls, model_path: str | Path) -> TargetInfo:
        path = Path(model_path) / "config.json"
        if not path.exists():
            raise DraftConfigError(f"target config not found: {path}")
        return cls.from_hf_dict(json.loads(path.read_text()), source=str(path))


@dataclass(frozen=True)
class EDSDDraftConfig:
    """What a draft is: the target it was built for, selected layers, input-module shape.

    `input_module="fc"` describes the matched EAGLE-3 baseline (any number of layers,
    served by SGLang's own EAGLE3); EDSD drafts use "edfuse" with exactly two layers.
    """

    target: TargetInfo
    layer_ids: tuple[int, ...]
    expansion_size: int
    draft_vocab_size: int
    token_layernorm: bool = True
    input_module: str = "edfuse"

    @property
    def architecture(self) -> str:
        return INPUT_MODULES[self.input_module]

    @property
    def hidden_size(self) -> int:
        return self.target.hidden_size

    @property
    def feature_size(self) -> int:
        return self.target.hidden_size * len(self.layer_ids)

    def validate(self) -> None:
        """Check internal consistency; raises DraftConfigError naming the field."""
        L = self.target.num_hidden_layers
        if self.input_module not in INPUT_MODULES:
            raise DraftConfigError(
                f"edsd_config.input_module must be one of {sorted(INPUT_MODULES)}, got {self.input_module!r}"
            )
        wanted = 2 if self.input_module == "edfuse" else len(self.layer_ids)
        if len(self.layer_ids) != wanted or len(set(self.layer_ids)) != len(self.layer_ids) or not self.layer_ids:
            raise DraftConfigError(
                f"eagle_aux_hidden_state_layer_ids must name {wanted} distinct target layers for "
                f"input_module={self.input_module!r}, got {list(self.layer_ids)}"
            )
        for i in self.layer_ids:
            if not 0 <= i <= L - 2:
                raise DraftConfigError(
                    f"layer id {i} is out of range for a target with L={L} decoder layers "
                    f"(valid SGLang ids: 0..{L - 2}; id i = output of decoder layer i)"
                )
        if list(self.layer_ids) != sorted(self.layer_ids):
            raise DraftConfigError(
                f"layer ids must be ascending (SGLang concatenates captures in layer order), got {list(self.layer_ids)}"
            )
        if self.expansion_size <= 0:
            raise DraftConfigError(f"edsd_config.expansion_size must be positive, got {self.expansion_size}")
        if not 0 < self.draft_vocab_size <= self.target.vocab_size:
            raise DraftConfigError(
                f"draft_vocab_size {self.draft_vocab_size} must be in 1..{self.target.vocab_size} (the target vocab)"
            )

    def check_target(self, target: TargetInfo) -> None:
        """Refuse a draft built for a different target (vocab, hidden size or depth differ)."""
        for field in ("vocab_size", "hidden_size", "num_hidden_layers"):
            mine, theirs = getattr(self.target, field), getattr(target, field)
            if mine != theirs:
                raise DraftConfigError(
                    f"draft was built for another target: target {field} is {theirs}, "
                    f"the draft expects {mine} (draft target: {self.target.architecture})"
                )
        L = target.num_hidden_layers
        bad = [i for i in self.layer_ids if not 0 <= i <= L - 2]
        if bad:
            raise DraftConfigError(f"layer ids {bad} out of range 0..{L - 2} for this target (L={L})")

    def to_hf_dict(self) -> dict[str, Any]:
        t = self.target
        return {
            "architectures": [self.architecture],
            "model_type": "llama",
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "head_dim": t.head_dim,
            "num_hidden_layers": 1,
            "hidden_act": "silu",
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "max_position_embeddings": t.max_position_embeddings,
            "vocab_size": t.vocab_size,
            "draft_vocab_size": self.draft_vocab_size,
            "target_hidden_size": t.hidden_size,
            "tie_word_embeddings": False,
            "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(self.layer_ids), "use_aux_hidden_state": True},
            "edsd_config": {
                "format_version": FORMAT_VERSION,
                "expansion_size": self.expansion_size,
                "token_layernorm": self.token_layernorm,
                "input_module": self.input_module,
                "target": asdict(t),
            },
        }

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any], source: str = "draft config") -> EDSDDraftConfig:
        archs = cfg.get("architectures") or []
        edsd = cfg.get("edsd_config")
        if not set(archs) & set(INPUT_MODULES.values()) or not isinstance(edsd, dict):
            raise DraftConfigError(
                f"{source} is not an EDSD draft: expected architectures [{EDSD_ARCHITECTURE!r}] and an "
                f"'edsd_config' section, got architectures={archs} "
                f"({'with' if edsd else 'without'} edsd_config). Build one with `sglang-edsd init-draft` "
                "or `sglang-edsd export`."
            )
        ids = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
        if not ids:
            raise DraftConfigError(f"{source}: eagle_config.eagle_aux_hidden_state_layer_ids is missing")
        try:
            config = cls(
                target=TargetInfo(**edsd["target"]),
                layer_ids=tuple(int(i) for i in ids),
                expansion_size=int(edsd["expansion_size"]),
                draft_vocab_size=int(cfg.get("draft_vocab_size") or cfg["vocab_size"]),
                token_layernorm=bool(edsd.get("token_layernorm", True)),
                input_module=str(edsd.get("input_module", "edfuse")),
            )
        except (KeyError, TypeError) as e:
            raise DraftConfigError(f"{source}: malformed edsd_config ({e})") from None
        config.validate()
        if config.architecture not in archs:
            raise DraftConfigError(
                f"{source}: architectures {archs} do not match input_module={config.input_module!r} "
                f"(expected {config.architecture!r})"
            )
        return config

    @classmethod
    def from_path(cls, draft_path: str | Path) -> EDSDDraftConfig:
        path = Path(draft_path) / "config.json"
        if not path.exists():
            raise DraftConfigError(f"draft config not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DraftConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_hf_dict(raw, source=str(path))

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Checkpoint tensor names and shapes of this draft (names as exported, no `model.`)."""
        t, d, m = self.target, self.hidden_size, self.expansion_size
        q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
        shapes: dict[str, tuple[int, ...]] = {
            "embed_tokens.weight": (t.vocab_size, d),
            "layers.0.hidden_norm.weight": (d,),
            "layers.0.input_layernorm.weight": (d,),
            "layers.0.self_attn.q_proj.weight": (q, 2 * d),
            "layers.0.self_attn.k_proj.weight": (kv, 2 * d),
            "layers.0.self_attn.v_proj.weight": (kv, 2 * d),
            "layers.0.self_attn.o_proj.weight": (d, q),
            "layers.0.post_attention_layernorm.weight": (d,),
            "layers.0.mlp.gate_proj.weight": (t.intermediate_size, d),
            "layers.0.mlp.up_proj.weight": (t.intermediate_size, d),
            "layers.0.mlp.down_proj.weight": (d, t.intermediate_size),
            "norm.weight": (d,),
            "lm_head.weight": (self.draft_vocab_size, d),
            "d2t": (self.draft_vocab_size,),
            "t2d": (t.vocab_size,),
        }
        if self.input_module == "fc":
            shapes["fc.weight"] = (d, self.feature_size)
            return shapes
        shapes.update(
            {"edfuse.gate.weight": (m, self.feature_size), "edfuse.up.weight": (m, d), "edfuse.down.weight": (d, m)}
        )
        if self.token_layernorm:
            shapes["edfuse.norm.weight"] = (d,)
            shapes["edfuse.norm.bias"] = (d,)
        return shapes


def check_tensor_manifest(config: EDSDDraftConfig, found: dict[str, tuple[int, ...]], source: str) -> None:
    """Compare checkpoint tensors with the config's manifest; name every problem."""
    expected = config.expected_tensors()
    found = {k.removeprefix("model."): v for k, v in found.items()}
    problems = []
    missing = sorted(set(expected) - set(found) - OPTIONAL_TENSORS)
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s): {', '.join(unexpected)}")
    for name in sorted(set(found) & set(expected)):
        if tuple(found[name]) != expected[name]:
            problems.append(f"tensor {name} has shape {tuple(found[name])}, expected {expected[name]}")
    if problems:
        raise DraftConfigError(f"{source}: " + "; ".join(problems))


def read_safetensors_manifest(draft_path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors headers (no tensor data read)."""
    from safetensors import safe_open

    files = sorted(Path(draft_path).glob("*.safetensors"))
    if not files:
        raise DraftConfigError(f"no *.safetensors weights in draft folder {draft_path}")
    manifest: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():
                manifest[name] = tuple(sf.get_slice(name).get_shape())
    return manifest


def validate_draft_folder(draft_path: str | Path, target: TargetInfo | str | Path | None) -> EDSDDraftConfig:
    """Full start-up check of a local draft folder against a target (its facts or its local
    folder; a folder without config.json is an error, not a skipped check)."""
    config = EDSDDraftConfig.from_path(draft_path)
    if target is not None:
        config.check_target(target if isinstance(target, TargetInfo) else TargetInfo.from_path(target))
    check_tensor_manifest(config, read_safetensors_manifest(draft_path), str(draft_path))
    return config
