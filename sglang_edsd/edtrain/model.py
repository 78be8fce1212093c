"""The training-side EDSD draft: the serving model's math in plain PyTorch (no sglang).

Parameter names equal the exported checkpoint names (`edfuse.*` or `fc.weight`,
`layers.0.*`, `norm.weight`, `lm_head.weight`), so `state_dict()` is the export. The math
mirrors SGLang's EAGLE-3 decoder layer (sglang/srt/models/llama_eagle3.py), which the
serving model reuses:

    x   = EDFuse(features, E(tok))             draft-extend only (or fc(features), baseline)
    a   = o_proj(attn(rope(qkv([rms_in(E(tok)) | rms_hidden(x)]))))
    r   = a + x;  m = mlp(rms_post(r));  aux = m + r;  logits = lm_head(rms_final(aux))

`aux` (pre-norm) is what SGLang feeds back as the next draft step's hidden state, and,
as in serving, feedback steps skip EDFuse. The attention is the training-time-test mask:
a step-k query at row i sees the step-0 keys of rows <= i plus its own row's keys from
steps 1..k, exactly the KV a depth-k draft decode sees in SGLang.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sglang_edsd.draft_config import EDSDDraftConfig
from sglang_edsd.edfuse import EDFuse


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama RMSNorm: normalise in float32, scale in the input dtype."""
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class TTTCache:
    """Keys/values of one unroll: step 0 for every row, then one diagonal entry per step;
    `segments` are the packed samples' (start, end) rows, which never attend to each other
    (None: all rows are one sample)."""

    def __init__(self, segments: list[tuple[int, int]] | None = None) -> None:
        self.segments = segments
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []


class DraftAttention(nn.Module):
    """Llama GQA attention over [token | hidden] (2d wide), neox RoPE, TTT mask."""

    def __init__(self, cfg: EDSDDraftConfig) -> None:
        super().__init__()
        t = cfg.target
        self.heads, self.kv_heads, self.head_dim = t.num_attention_heads, t.num_key_value_heads, t.head_dim
        d = t.hidden_size
        self.q_proj = nn.Linear(2 * d, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(2 * d, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(2 * d, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, d, bias=False)
        inv_freq = 1.0 / (t.rope_theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (n, 1, head_dim)
        return (x.float() * emb.cos() + _rotate_half(x.float()) * emb.sin()).to(x.dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: TTTCache) -> torch.Tensor:
        n = x.shape[0]
        q = self._rope(self.q_proj(x).view(n, self.heads, self.head_dim), positions)
        k = self._rope(self.k_proj(x).view(n, self.kv_heads, self.head_dim), positions)
        v = self.v_proj(x).view(n, self.kv_heads, self.head_dim)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        cache.keys.append(k)
        cache.values.append(v)
        q = q.transpose(0, 1) * self.head_dim**-0.5  # (H, n, hd)
        out = torch.cat([self._attend(q[:, a:b], cache, a, b) for a, b in cache.segments or [(0, n)]], dim=1)
        return self.o_proj(out.transpose(0, 1).reshape(n, self.heads * self.head_dim))

    @staticmethod
    def _attend(q: torch.Tensor, cache: TTTCache, a: int, b: int) -> torch.Tensor:
        """Rows a..b-1 (one sample): causal over its step-0 keys, plus each row's own later-step keys."""
        n = b - a
        k0, v0 = cache.keys[0][a:b].transpose(0, 1), cache.values[0][a:b].transpose(0, 1)
        causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        scores = (q @ k0.transpose(1, 2)).masked_fill(~causal, float("-inf"))  # (H, n, n)
        diag = [(q * kk[a:b].transpose(0, 1)).sum(-1, keepdim=True) for kk in cache.keys[1:]]  # (H, n, 1) each
        probs = torch.softmax(torch.cat([scores, *diag], dim=-1).float(), dim=-1).to(q.dtype)
        out = probs[..., :n] @ v0
        for s, vv in enumerate(cache.values[1:]):
            out = out + probs[..., n + s : n + s + 1] * vv[a:b].transpose(0, 1)
        return out


class DraftMLP(nn.Module):
    def __init__(self, d: int, inter: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, inter, bias=False)
        self.up_proj = nn.Linear(d, inter, bias=False)
        self.down_proj = nn.Linear(inter, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DraftDecoderLayer(nn.Module):
    """SGLang's EAGLE-3 input layer: qkv reads [input_layernorm(embeds) | hidden_norm(hidden)]."""

    def __init__(self, cfg: EDSDDraftConfig) -> None:
        super().__init__()
        t = cfg.target
        self.hidden_norm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.self_attn = DraftAttention(cfg)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.mlp = DraftMLP(t.hidden_size, t.intermediate_size)

    def forward(
        self, embeds: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, cache: TTTCache
    ) -> torch.Tensor:
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        r = self.self_attn(x, positions, cache) + hidden
        return self.mlp(self.post_attention_layernorm(r)) + r


class EDSDTrainDraft(nn.Module):
    """One-layer draft with EDFuse (or the EAGLE-3 `fc`) in front; `state_dict()` is the export."""

    def __init__(self, cfg: EDSDDraftConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        d = cfg.hidden_size
        if cfg.input_module == "edfuse":
            self.edfuse = EDFuse(cfg.feature_size, d, cfg.expansion_size, cfg.token_layernorm)
        else:
            self.fc = nn.Linear(cfg.feature_size, d, bias=False)
        self.layers = nn.ModuleList([DraftDecoderLayer(cfg)])
        self.norm = RMSNorm(d, cfg.target.rms_norm_eps)
        self.lm_head = nn.Linear(d, cfg.draft_vocab_size, bias=False)

    def fuse(self, features: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Draft-extend input: target features [h_a | h_b | ...] joined with the token embedding."""
        if self.config.input_module == "edfuse":
            return self.edfuse(features, embeds)
        return self.fc(features)

    def step(
        self, embeds: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, cache: TTTCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draft step: (logits over the draft vocab, aux hidden fed to the next step)."""
        aux = self.layers[0](embeds, hidden, positions, cache)
        return self.lm_head(self.norm(aux)), aux

    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        embed: torch.Tensor,
        num_steps: int,
        seq_lens: list[int] | None = None,
    ) -> list[torch.Tensor]:
        """Training-time test over one sequence, or several packed back to back (`seq_lens`):
        logits of steps 0..num_steps-1.

        Row i at step k reads token x[i+1+k] at position i+k of its own sample and predicts
        x[i+2+k]; rows running past their sample's end read token 0 and are masked by the loss
        (they are only ever attended to by themselves).
        """
        n = input_ids.shape[0]
        seq_lens = seq_lens or [n]
        if sum(seq_lens) != n or min(seq_lens) < 1:
            raise ValueError(f"seq_lens {seq_lens} must be positive and add up to the {n} packed rows")
        device = input_ids.device
        bounds = torch.tensor([0, *seq_lens], device=device).cumsum(0)
        segments = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        lens = torch.tensor(seq_lens, device=device)
        start = torch.repeat_interleave(bounds[:-1], lens)
        end = torch.repeat_interleave(bounds[1:], lens)
        rows = torch.arange(n, device=device)
        cache = TTTCache(segments)
        hidden = None
        out = []
        for k in range(num_steps):
            src = rows + 1 + k
            tokens = torch.where(src < end, input_ids[src.clamp(max=n - 1)], 0)
            embeds = F.embedding(tokens, embed).to(features.dtype)
            if hidden is None:
                hidden = self.fuse(features, embeds)
            logits, hidden = self.step(embeds, hidden, rows - start + k, cache)
            out.append(logits)
        return out

    def init_from_target(self, lm_head_rows: torch.Tensor, final_norm: torch.Tensor, seed: int) -> None:
        """Random N(0, 0.02) weights, norms at 1, then lm_head and final norm from the target.

        Starting the head at the target's own (draft-vocab) lm_head rows is the cheap part of
        what the draft must learn anyway; every recipe uses the same init.
        """
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("norm.bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            self.lm_head.weight.copy_(lm_head_rows)
            self.norm.weight.copy_(final_norm)

    def init_decoder_from_target(self, layer: dict[str, torch.Tensor]) -> None:
        """Start the decoder layer from a target decoder layer (names relative to it).

        Why: the draft layer has the target layer's shapes except that q/k/v read
        [token | hidden] (2d): the hidden half and everything else take the target's weights,
        the token half keeps its small random init, so training starts from a working
        transformer layer instead of noise. The target's input norm becomes `hidden_norm`.
        """
        d = self.config.hidden_size
        ours = self.layers[0]
        plan = {f"self_attn.{p}_proj.weight": getattr(ours.self_attn, f"{p}_proj").weight for p in "qkv"}
        with torch.no_grad():
            for name, dst in plan.items():
                _copy_checked(dst[:, d:], layer, name)
            for name in (
                "self_attn.o_proj.weight",
                "mlp.gate_proj.weight",
                "mlp.up_proj.weight",
                "mlp.down_proj.weight",
                "post_attention_layernorm.weight",
            ):
                _copy_checked(ours.get_parameter(name), layer, name)
            _copy_checked(ours.hidden_norm.weight, layer, "input_layernorm.weight")


def _copy_checked(dst: torch.Tensor, layer: dict[str, torch.Tensor], name: str) -> None:
    if name not in layer:
        raise ValueError(f"target decoder layer has no tensor {name!r} (has {sorted(layer)[:12]})")
    if layer[name].shape != dst.shape:
        raise ValueError(f"target {name} is {tuple(layer[name].shape)}, the draft needs {tuple(dst.shape)}")
    dst.copy_(layer[name])
