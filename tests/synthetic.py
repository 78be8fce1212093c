"""A hand-built tiny target and EDSD drafts whose predictions depend on captured features.

Why: a random draft is never right and a bigram draft can be right without reading the
target at all, so neither proves that SGLang captures the two selected layers, feeds them
through EDFuse and verifies the result. These weights make every link observable.

Codes are one-hot over a set S of n tokens (code i <-> token S[i]); hidden size 64 =
[current-token code (32) | feature code (32)]. All attention outputs are zero (o_proj = 0),
so each layer is its MLP, a lookup table over codes.

Target (4 layers), at position t with x_t = S[i]:
  layer 0: nothing           -> output (SGLang id 0) = [e_i, 0]
  layer 1: writes e_{g(i)}   -> output (SGLang id 1) = [e_i, e_{g(i)}]   (g: a permutation)
  layer 2: erases 2nd half   -> output (SGLang id 2) = [e_i, 0]
  lm_head reads the 1st half: the target's greedy next token is S[f(i)], f(i) = i+1 mod n.
The target's output never depends on g, so serving a target whose layer 1 writes
e_{g(i + shift)} ("layer 1's features corrupted") changes what the draft sees and nothing
else; with shift != 0 the draft's first token is never right.

Draft (layer ids [0, 1]) at draft-extend position t predicts x_{t+2}:
  EDFuse: token stream is constant (LayerNorm weight 0, bias 1); feature stream maps the
          code e_{g(i)} found in layer 1's 2nd half to e_{f(i)};
  decoder layer: its MLP advances a code y -> f~(y); lm_head reads the code.
  So the first draft token is S[f~(f(i))] = x_{t+2} when f~ = f, and decode steps keep
  applying f~ to the draft's own hidden state. With f~ = f the draft is always right; with
  f~ wrong on some codes it is right part of the time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_edsd.draft_config import EDSDDraftConfig, TargetInfo
from sglang_edsd.draft_io import vocab_maps, write_draft

N_CODES = 16
HALF = 32
HIDDEN = 64
LAYERS = 4
VOCAB = 49152
TOKENS = list(range(1000, 1000 + N_CODES))  # S: the token ids the codes stand for
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def f(i: int) -> int:
    """The target's rule on codes."""
    return (i + 1) % N_CODES


def g_perm() -> list[int]:
    """The permutation layer 1 writes (fixed)."""
    return torch.randperm(N_CODES, generator=torch.Generator().manual_seed(0)).tolist()


def _e(i: int, size: int = HIDDEN) -> torch.Tensor:
    v = torch.zeros(size)
    v[i] = 1.0
    return v


def _attention(prefix: str, gen: torch.Generator, heads: int, kv_heads: int, head_dim: int, d_in: int) -> dict:
    """Random q/k/v, zero o_proj: attention runs (and uses the KV cache) but adds nothing."""
    return {
        f"{prefix}.q_proj.weight": torch.randn(heads * head_dim, d_in, generator=gen) * 0.1,
        f"{prefix}.k_proj.weight": torch.randn(kv_heads * head_dim, d_in, generator=gen) * 0.1,
        f"{prefix}.v_proj.weight": torch.randn(kv_heads * head_dim, d_in, generator=gen) * 0.1,
        f"{prefix}.o_proj.weight": torch.zeros(HIDDEN, heads * head_dim),
    }


def _table_mlp(rows: dict[int, torch.Tensor], read_scale: float) -> dict[str, torch.Tensor]:
    """An MLP that, for an input whose RMS-normalised value is read_scale * e_k, adds rows[k].

    gate = up = identity on the read dims, so only the active code k passes SiLU*up; down
    divides by that activation so the addition is exact.
    """
    gate = torch.zeros(HIDDEN, HIDDEN)
    down = torch.zeros(HIDDEN, HIDDEN)
    act = float(F.silu(torch.tensor(read_scale)) * read_scale)
    for k, out in rows.items():
        gate[k, k] = 1.0
        down[:, k] = out / act
    return {"gate_proj.weight": gate, "up_proj.weight": gate.clone(), "down_proj.weight": down}


def build_target(out: Path, tokenizer_src: Path, corrupt_shift: int = 0) -> Path:
    """Write the tiny Llama target (float32); layer 1 writes e_{g(i + corrupt_shift)}."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    heads, kv_heads, head_dim = 4, 2, 16
    g = g_perm()
    w: dict[str, torch.Tensor] = {}
    embed = torch.zeros(VOCAB, HIDDEN)
    for i, tok in enumerate(TOKENS):
        embed[tok] = _e(i)
    w["model.embed_tokens.weight"] = embed
    # RMS-normalised scale of a one-hot (1 of 64 dims) and of two one-hots.
    one, two = HIDDEN**0.5, (HIDDEN / 2) ** 0.5
    mlps = {
        0: {},
        1: {i: _e(HALF + g[(i + corrupt_shift) % N_CODES]) for i in range(N_CODES)},
        2: {HALF + j: -_e(HALF + j) for j in range(N_CODES)},
        3: {},
    }
    scales = {0: one, 1: one, 2: two, 3: one}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        w.update(_attention(f"{p}.self_attn", gen, heads, kv_heads, head_dim, HIDDEN))
        for name, t in _table_mlp(mlps[layer], scales[layer]).items():
            w[f"{p}.mlp.{name}"] = t
        w[f"{p}.input_layernorm.weight"] = torch.ones(HIDDEN)
        w[f"{p}.post_attention_layernorm.weight"] = torch.ones(HIDDEN)
    w["model.norm.weight"] = torch.ones(HIDDEN)
    head = torch.zeros(VOCAB, HIDDEN)
    for i in range(N_CODES):
        head[TOKENS[f(i)]] = _e(i) * 4.0
    w["lm_head.weight"] = head
    save_file({k: v.contiguous() for k, v in w.items()}, str(out / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": HIDDEN,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "num_hidden_layers": LAYERS,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "vocab_size": VOCAB,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (tokenizer_src / name).exists():
            shutil.copy(tokenizer_src / name, out / name)
    return out


def build_draft(out: Path, target: Path, wrong_codes: frozenset[int] = frozenset()) -> Path:
    """Write an EDSD draft for the uncorrupted target; its advance rule is wrong on `wrong_codes`."""
    info = TargetInfo.from_path(target)
    config = EDSDDraftConfig(target=info, layer_ids=(0, 1), expansion_size=HALF, draft_vocab_size=N_CODES)
    g = g_perm()
    c = 20.0
    gate = torch.zeros(HALF, 2 * HIDDEN)
    for i in range(N_CODES):
        gate[f(i), HIDDEN + HALF + g[i]] = c  # read layer 1's feature code
    down = torch.zeros(HIDDEN, HALF)
    for j in range(N_CODES):
        down[:, j] = _e(j) / float(F.silu(torch.tensor(c)))
    advance = {y: _e((f(y) + (1 if y in wrong_codes else 0)) % N_CODES) - _e(y) for y in range(N_CODES)}
    mlp = _table_mlp(advance, HIDDEN**0.5)
    gen = torch.Generator().manual_seed(99)
    t: dict[str, torch.Tensor] = {
        "edfuse.gate.weight": gate,
        "edfuse.norm.weight": torch.zeros(HIDDEN),
        "edfuse.norm.bias": torch.ones(HIDDEN),
        "edfuse.up.weight": torch.ones(HALF, HIDDEN) / HIDDEN,
        "edfuse.down.weight": down,
        "layers.0.hidden_norm.weight": torch.ones(HIDDEN),
        "layers.0.input_layernorm.weight": torch.ones(HIDDEN),
        "layers.0.post_attention_layernorm.weight": torch.ones(HIDDEN),
        "norm.weight": torch.ones(HIDDEN),
        "lm_head.weight": torch.stack([_e(j) * 4.0 for j in range(N_CODES)]),
    }
    t.update({f"layers.0.mlp.{k}": v for k, v in mlp.items()})
    t.update(
        _attention(
            "layers.0.self_attn", gen, info.num_attention_heads, info.num_key_value_heads, info.head_dim, 2 * HIDDEN
        )
    )
    t.update(vocab_maps(torch.tensor(TOKENS), VOCAB))
    return write_draft(config, t, out, dtype=torch.float32, target_path=target)


def tiny_llama(out: Path, num_layers: int) -> Path:
    """A random Llama, 32 wide with a 300-token vocabulary (seeded): a target for toolkit tests."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


NEW_TOKENS = 48
PROMPT_LEN = 6


def wiring_prompts() -> list[list[int]]:
    """Prompts of S tokens starting at different codes (the target only counts onward)."""
    return [[TOKENS[(start + 3 * k) % N_CODES] for k in range(PROMPT_LEN)] for start in (0, 5, 9, 14)]


def expected_continuation(prompt: list[int], n: int) -> list[int]:
    """The tiny target's greedy continuation, computed from its rule (an independent oracle)."""
    code = TOKENS.index(prompt[-1])
    out = []
    for _ in range(n):
        code = f(code)
        out.append(TOKENS[code])
    return out


def build_tiny_target(out: Path, tokenizer_src: Path) -> Path:
    """A random Llama (4 layers, d=64) with SmolLM2's tokenizer and chat template."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.08,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float32",
    )
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    for name in (*TOKENIZER_FILES, "chat_template.jinja"):
        if (tokenizer_src / name).exists():
            shutil.copy(tokenizer_src / name, out / name)
    return out
