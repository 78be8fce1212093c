"""EDTrain pieces on CPU: Eq. 5/6, Mask-p, the TTT attention mask, labels and the loss."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sglang_edsd.draft_config import EDSDDraftConfig, TargetInfo
from sglang_edsd.edtrain import (
    TrainConfigError,
    mask_high_entropy,
    mask_percent,
    num_steps,
    recipe,
)
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.objective import make_labels, step_loss, unroll_loss

TINY = TargetInfo(
    architecture="LlamaForCausalLM",
    num_hidden_layers=4,
    hidden_size=32,
    vocab_size=97,
    intermediate_size=48,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    max_position_embeddings=256,
)


def tiny_draft(input_module: str = "edfuse", seed: int = 0) -> EDSDTrainDraft:
    ids = (0, 2) if input_module == "edfuse" else (0, 1, 2)
    cfg = EDSDDraftConfig(TINY, ids, expansion_size=40, draft_vocab_size=50, input_module=input_module)
    torch.manual_seed(seed)
    model = EDSDTrainDraft(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def test_eq5_mask_percent_paper_values() -> None:
    assert [mask_percent(t, 8, 3) for t in range(8)] == [21, 18, 15, 12, 9, 6, 3, 0]
    assert mask_percent(0, 1, 3) == 0
    with pytest.raises(ValueError, match="epoch"):
        mask_percent(8, 8, 3)


def test_eq6_num_steps_paper_values() -> None:
    assert [num_steps(t, 8, 7) for t in range(8)] == [1, 1, 2, 3, 4, 5, 6, 7]
    assert [num_steps(t, 2, 7) for t in range(2)] == [1, 7]
    assert num_steps(0, 1, 7) == 7


def test_mask_p_drops_exactly_the_highest_entropy_loss_tokens() -> None:
    loss_mask = torch.tensor([0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool)
    # The already-masked positions 0 and 3 carry the highest entropies: they must not be counted.
    entropy = torch.tensor([9.0, 0.5, 3.0, 8.0, 0.1, 2.0, 0.7, 4.0, 1.0, 0.2, 0.3, 0.4])
    keep = mask_high_entropy(loss_mask, entropy, 21)  # 10 loss tokens -> floor(2.1) = 2 dropped
    assert keep.tolist() == [False, True, False, False, True, True, True, False, True, True, True, True]
    assert mask_high_entropy(loss_mask, entropy, 0).tolist() == loss_mask.tolist()
    assert not mask_high_entropy(loss_mask, entropy, 100).any()
    with pytest.raises(ValueError):
        mask_high_entropy(loss_mask, entropy, 101)


def _naive_attention_rows(model: EDSDTrainDraft, features, ids, embed, steps):
    """Row-by-row reference: row i at step k attends to K0[0..i] and its own steps 1..k."""
    n = ids.shape[0]
    layer = model.layers[0]
    attn = layer.self_attn
    padded = torch.cat([ids, ids.new_zeros(steps + 1)])
    outs = []
    hidden = None
    per_step_kv = []
    for k in range(steps):
        emb = embed[padded[1 + k : 1 + k + n]]
        hidden = model.fuse(features, emb) if hidden is None else hidden
        x = torch.cat([layer.input_layernorm(emb), layer.hidden_norm(hidden)], -1)
        pos = torch.arange(n) + k
        q = attn._rope(attn.q_proj(x).view(n, attn.heads, attn.head_dim), pos)
        kk = attn._rope(attn.k_proj(x).view(n, attn.kv_heads, attn.head_dim), pos)
        vv = attn.v_proj(x).view(n, attn.kv_heads, attn.head_dim)
        rep = attn.heads // attn.kv_heads
        per_step_kv.append((kk.repeat_interleave(rep, 1), vv.repeat_interleave(rep, 1)))
        rows = []
        for i in range(n):
            keys = [per_step_kv[0][0][j] for j in range(i + 1)] + [per_step_kv[s][0][i] for s in range(1, k + 1)]
            vals = [per_step_kv[0][1][j] for j in range(i + 1)] + [per_step_kv[s][1][i] for s in range(1, k + 1)]
            K, V = torch.stack(keys, 1), torch.stack(vals, 1)  # (H, m, hd)
            w = torch.softmax((q[i][:, None, :] * K).sum(-1) * attn.head_dim**-0.5, -1)
            rows.append((w[..., None] * V).sum(1).reshape(-1))
        a = attn.o_proj(torch.stack(rows))
        r = a + hidden
        hidden = layer.mlp(layer.post_attention_layernorm(r)) + r
        outs.append(model.lm_head(model.norm(hidden)))
    return outs


@pytest.mark.parametrize("input_module", ["edfuse", "fc"])
def test_ttt_attention_matches_row_by_row_reference(input_module: str) -> None:
    model = tiny_draft(input_module)
    gen = torch.Generator().manual_seed(1)
    n = 7
    features = torch.randn(n, model.config.feature_size, generator=gen)
    ids = torch.randint(0, TINY.vocab_size, (n,), generator=gen)
    embed = torch.randn(TINY.vocab_size, TINY.hidden_size, generator=gen)
    with torch.no_grad():
        fast = model(features, ids, embed, 4)
        slow = _naive_attention_rows(model, features, ids, embed, 4)
    for k, (a, b) in enumerate(zip(fast, slow)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"step {k}")


def test_unroll_is_causal_in_the_sequence() -> None:
    """Row i's logits at every step depend on nothing after token x[i+1+k]."""
    model = tiny_draft()
    gen = torch.Generator().manual_seed(2)
    n = 9
    features = torch.randn(n, model.config.feature_size, generator=gen)
    ids = torch.randint(0, TINY.vocab_size, (n,), generator=gen)
    embed = torch.randn(TINY.vocab_size, TINY.hidden_size, generator=gen)
    f2, ids2 = features.clone(), ids.clone()
    f2[6:] += 1.0
    ids2[8] = (ids2[8] + 1) % TINY.vocab_size
    with torch.no_grad():
        a, b = model(features, ids, embed, 3), model(f2, ids2, embed, 3)
    for k in range(3):
        # rows whose inputs (features rows <= i, tokens <= i+1+k) are untouched
        last_clean = min(5, 8 - 2 - k)
        torch.testing.assert_close(a[k][: last_clean + 1], b[k][: last_clean + 1])
        assert not torch.allclose(a[k][6], b[k][6])


def test_labels_follow_the_shift_convention() -> None:
    n, vd = 6, 5
    loss_mask = torch.tensor([0, 0, 1, 1, 1, 1])
    entropy = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0])
    top1 = torch.tensor([0, 1, 2, 3, 4, 90])  # position 5's argmax (90) is outside the draft vocab
    in_vocab = torch.zeros(97, dtype=torch.bool)
    in_vocab[:vd] = True
    labels = make_labels(torch.randn(n, vd), loss_mask, entropy, top1, in_vocab, 0)
    # p_j is a label when x[j+1] is loss-bearing: j = 1..4; j = 5 has no next token.
    assert labels.scored.tolist() == [False, True, True, True, True, False]
    masked = make_labels(torch.randn(n, vd), loss_mask, entropy, top1, in_vocab, 25)
    assert masked.train.tolist() == [False, True, True, False, True, False]  # 25% of 4 -> j=3 (entropy 5)


def test_step_loss_is_minimal_when_draft_equals_target() -> None:
    """Row i at step k must be scored against p_{i+1+k}: logits shifted that way minimise the loss."""
    n, vd, k = 8, 6, 2
    gen = torch.Generator().manual_seed(3)
    target_logits = torch.randn(n, vd, generator=gen)
    labels = make_labels(
        target_logits,
        torch.ones(n),
        torch.zeros(n),
        torch.zeros(n, dtype=torch.long),
        torch.ones(vd, dtype=torch.bool),
        0,
    )
    aligned = torch.cat([target_logits[1 + k :], torch.zeros(1 + k, vd)])
    d2t = torch.arange(vd)
    best = step_loss(aligned, labels, k, d2t)
    off = step_loss(torch.cat([target_logits[k:], torch.zeros(k, vd)]), labels, k, d2t)
    entropy = -(labels.probs * labels.probs.log()).sum(-1)[1 + k : n - 1].mean()
    torch.testing.assert_close(best.loss, entropy)
    assert off.loss > best.loss + 1e-3
    assert best.tokens == n - 2 - k  # the last label position is n - 2


def test_unroll_loss_weights_steps() -> None:
    model = tiny_draft()
    n = 8
    features = torch.randn(n, model.config.feature_size)
    ids = torch.randint(0, TINY.vocab_size, (n,))
    embed = torch.randn(TINY.vocab_size, TINY.hidden_size)
    labels = make_labels(
        torch.randn(n, 50),
        torch.ones(n),
        torch.rand(n),
        torch.zeros(n, dtype=torch.long),
        torch.ones(97, dtype=torch.bool),
        0,
    )
    logits = model(features, ids, embed, 3)
    total, stats = unroll_loss(logits, labels, torch.arange(50), 0.8)
    torch.testing.assert_close(total, stats[0].loss + 0.8 * stats[1].loss + 0.64 * stats[2].loss)
    total.backward()
    assert model.edfuse.gate.weight.grad is not None and model.edfuse.gate.weight.grad.abs().sum() > 0


def test_recipes_and_ablations_are_flags() -> None:
    edsd = recipe("edsd")
    assert (
        edsd.input_module,
        edsd.mask_p,
        edsd.step_n,
        edsd.epochs,
        edsd.s_max,
        edsd.gamma,
        edsd.lr,
        edsd.betas,
        edsd.max_length,
    ) == ("edfuse", True, True, 8, 7, 3.0, 5e-5, (0.9, 0.95), 2048)
    eagle3 = recipe("eagle3")
    assert (eagle3.input_module, eagle3.mask_p, eagle3.step_n) == ("fc", False, False)
    ablation = recipe("edsd", mask_p=False, step_n=False, expansion="d", token_layernorm=False)
    assert (ablation.input_module, ablation.mask_p, ablation.step_n, ablation.expansion) == (
        "edfuse",
        False,
        False,
        "d",
    )
    with pytest.raises(TrainConfigError, match="recipe"):
        recipe("medusa")
    with pytest.raises(TrainConfigError, match="two target layers"):
        recipe("edsd", layer_ids=(1, 2, 3))
    with pytest.raises(TrainConfigError, match="gamma"):
        recipe("edsd", gamma=20.0)


def test_training_modules_do_not_import_sglang() -> None:
    code = (
        "import sys, sglang_edsd.edtrain.trainer, sglang_edsd.edtrain.command, sglang_edsd.capture, "
        "sglang_edsd.data.chat; bad = [m for m in sys.modules if m == 'sglang' or m.startswith('sglang.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_flags_are_the_config_fields() -> None:
    """`sglang-edsd train` flags (and so --config keys) come from TrainConfig's fields: they cannot drift."""
    import argparse
    from dataclasses import fields

    from sglang_edsd.edtrain.command import add_train_arguments, config_from_args
    from sglang_edsd.edtrain.recipes import TrainConfig

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    dests = {a.dest for a in p._actions}
    assert {f.name for f in fields(TrainConfig) if f.metadata["cli"]} <= dests
    assert config_from_args(p.parse_args(["--out", "x"])) == recipe("edsd")
    args = p.parse_args(["--out", "x", "--recipe", "eagle3", "--no-step-n", "--lr", "1e-3", "--precision", "fp32"])
    assert config_from_args(args) == recipe("eagle3", lr=1e-3, precision="fp32")  # eagle3 keeps mask_p off
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "x", "--precision", "fp16"])
