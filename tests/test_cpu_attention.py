"""The fused CPU attention paths (one SDPA call over a per-forward gather plan) against a float64
reference, on random pages, ragged lengths, causal prefill, chain verify and tree masks; and the
plan cache that lets every layer of a forward pass reuse one plan.

The Triton-oracle tests in test_cpu_ops.py cover the same ops against SGLang's kernels; these add
the float64 ground truth and the cache's invalidation rules, and need no server.
"""

from __future__ import annotations

import pytest
import torch

from sglang_edsd.cpu_support import ops

HEADS, KV_HEADS, DIM = 9, 3, 64
# float32 against float64: summation order and exp rounding over at most a few hundred keys
TOL = dict(atol=3e-6, rtol=3e-5)
# the options under which both ops take the fused path (no cap, window, sinks, encoder)
PLAIN = dict(
    sm_scale=DIM**-0.5, logit_cap=0.0, is_cross_attention=False, sliding_window_size=0, encoder_lens=None, sinks=None
)


def _pool(gen: torch.Generator, num_reqs: int, pool_len: int) -> torch.Tensor:
    """req_to_token whose cells are distinct random slots: pages scattered over the cache."""
    return torch.randperm(num_reqs * pool_len, generator=gen).view(num_reqs, pool_len).int()


def _reference(q, keys, values, allowed, scale):
    """softmax(q k^T * scale) v in float64; q [Lq, Hq, D], keys [Lk, Hkv, D], allowed [Lq, Lk]."""
    group = q.shape[1] // keys.shape[1]
    k = keys.double().repeat_interleave(group, dim=1)
    v = values.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def _decode_case(gen, seq_lens):
    bs, num_reqs, pool_len = len(seq_lens), len(seq_lens) + 3, 64
    table = _pool(gen, num_reqs, pool_len)
    k_buf = torch.randn(num_reqs * pool_len, KV_HEADS, DIM, generator=gen)
    v_buf = torch.randn(num_reqs * pool_len, KV_HEADS, DIM, generator=gen)
    reqs = torch.randperm(num_reqs, generator=gen)[:bs]
    seq = torch.tensor(seq_lens)
    return dict(
        query=torch.randn(bs, HEADS, DIM, generator=gen),
        k_buffer=k_buf,
        v_buffer=v_buf,
        k_scale=1.0,
        v_scale=1.0,
        output=torch.full((bs, HEADS, DIM), float("nan")),
        key=torch.randn(bs, KV_HEADS, DIM, generator=gen),
        value=torch.randn(bs, KV_HEADS, DIM, generator=gen),
        loc=table[reqs, seq - 1].long(),
        attn_logits=torch.empty(0),
        req_to_token=table,
        req_pool_indices=reqs,
        seq_lens=seq,
        **PLAIN,
    )


def _decode_reference(args):
    out = []
    for i, (req, n) in enumerate(zip(args["req_pool_indices"].tolist(), args["seq_lens"].tolist())):
        slots = args["req_to_token"][req, :n].long()
        k, v = args["k_buffer"][slots], args["v_buffer"][slots]  # the op stored key/value first
        allowed = torch.ones(1, n, dtype=torch.bool)
        out.append(_reference(args["query"][i : i + 1], k, v, allowed, args["sm_scale"])[0])
    return torch.stack(out)


@pytest.mark.parametrize("seq_lens", [[37], [1, 13, 40, 7, 25], [20, 20]], ids=["batch1", "ragged", "equal"])
def test_decode_matches_float64(seq_lens):
    args = _decode_case(torch.Generator().manual_seed(1), seq_lens)
    ops.decode_attention_cpu(**args)
    torch.testing.assert_close(args["output"].double(), _decode_reference(args), **TOL)


def _tree_blocks(gen, n: int, bs: int) -> torch.Tensor:
    """QLEN_ONLY tree masks: node i sees the root, itself and its ancestors (random parents)."""
    blocks = torch.zeros(bs, n, n, dtype=torch.bool)
    for b in range(bs):
        parent = [-1] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, n)]
        for i in range(n):
            j = i
            while j >= 0:
                blocks[b, i, j] = True
                j = parent[j]
    return blocks


def _extend_case(gen, prefix_lens, extend_lens, tree: bool, causal: bool = True, packed_start: int = 0):
    bs, num_reqs, pool_len = len(prefix_lens), len(prefix_lens) + 2, 96
    table = _pool(gen, num_reqs, pool_len)
    prefix, n = torch.tensor(prefix_lens), torch.tensor(extend_lens)
    seq = prefix + n
    reqs = torch.randperm(num_reqs, generator=gen)[:bs]
    rows = packed_start + int(n.sum())
    k_buf = torch.randn(num_reqs * pool_len, KV_HEADS, DIM, generator=gen)
    v_buf = torch.randn(num_reqs * pool_len, KV_HEADS, DIM, generator=gen)
    k_new = torch.randn(rows, KV_HEADS, DIM, generator=gen)
    v_new = torch.randn(rows, KV_HEADS, DIM, generator=gen)
    starts = packed_start + torch.cumsum(n, 0) - n
    blocks = _tree_blocks(gen, int(n[0]), bs) if tree else None
    return dict(
        q_extend=torch.randn(rows, HEADS, DIM, generator=gen),
        k_extend=k_new,
        v_extend=v_new,
        o_extend=torch.full((rows, HEADS, DIM), float("nan")),
        k_buffer=k_buf,
        v_buffer=v_buf,
        k_scale=1.0,
        v_scale=1.0,
        req_to_token=table,
        req_pool_indices=reqs,
        seq_lens=seq,
        extend_seq_lens=n.int(),
        extend_start_loc=starts.int(),
        max_len_extend=int(n.max()),
        **PLAIN,
        tree_mask=None if blocks is None else blocks.flatten(),
        is_causal=causal,
    )


def _extend_reference(args, new_from_cache: bool = False):
    out = torch.full(args["o_extend"].shape, float("nan"), dtype=torch.float64)
    blocks = None
    if args["tree_mask"] is not None:
        n0 = int(args["extend_seq_lens"][0])
        blocks = args["tree_mask"].view(-1, n0, n0)
    for b, req in enumerate(args["req_pool_indices"].tolist()):
        n, seq, start = (int(args[k][b]) for k in ("extend_seq_lens", "seq_lens", "extend_start_loc"))
        prefix = seq - n
        slots = args["req_to_token"][req, :seq].long()
        rows = slice(start, start + n)
        if new_from_cache:
            k, v = args["k_buffer"][slots], args["v_buffer"][slots]
        else:
            k = torch.cat([args["k_buffer"][slots[:prefix]], args["k_extend"][rows]])
            v = torch.cat([args["v_buffer"][slots[:prefix]], args["v_extend"][rows]])
        q_pos = prefix + torch.arange(n)[:, None]
        k_pos = torch.arange(seq)[None, :]
        if blocks is not None:
            allowed = torch.cat([torch.ones(n, prefix, dtype=torch.bool), blocks[b]], dim=1)
        elif args["is_causal"]:
            allowed = k_pos <= q_pos
        else:
            allowed = torch.ones(n, seq, dtype=torch.bool)
        out[rows] = _reference(args["q_extend"][rows], k, v, allowed, args["sm_scale"])
    return out


EXTEND_CASES = {
    "prefill_batch1": dict(prefix_lens=[0], extend_lens=[33], tree=False),
    "prefill_ragged_prefixes": dict(prefix_lens=[0, 5, 17, 30], extend_lens=[7, 1, 12, 20], tree=False),
    "chain_verify_batch1": dict(prefix_lens=[61], extend_lens=[5], tree=False),
    "chain_verify_batched": dict(prefix_lens=[9, 40, 22], extend_lens=[5, 5, 5], tree=False),
    "tree_verify_batch1": dict(prefix_lens=[45], extend_lens=[8], tree=True),
    "tree_verify_batched": dict(prefix_lens=[3, 50, 28], extend_lens=[8, 8, 8], tree=True),
    "non_causal": dict(prefix_lens=[4, 11], extend_lens=[6, 3], tree=False, causal=False),
    "rows_after_other_requests": dict(prefix_lens=[12], extend_lens=[5], tree=False, packed_start=7),
}


@pytest.mark.parametrize("case", EXTEND_CASES)
def test_extend_matches_float64(case):
    args = _extend_case(torch.Generator().manual_seed(2), **EXTEND_CASES[case])
    expected = _extend_reference(args)
    ops.extend_attention_cpu(**args)
    written = ~expected.isnan()
    torch.testing.assert_close(args["o_extend"].double()[written], expected[written], **TOL)
    assert args["o_extend"][~written].isnan().all()  # rows of no request are left alone


def test_extend_without_new_kv_reads_the_cache():
    """KV-shared layers pass no K/V: the new tokens' keys come from the cache."""
    args = _extend_case(torch.Generator().manual_seed(3), [10, 4], [5, 9], tree=False)
    for b, req in enumerate(args["req_pool_indices"].tolist()):
        n, seq, start = (int(args[k][b]) for k in ("extend_seq_lens", "seq_lens", "extend_start_loc"))
        slots = args["req_to_token"][req, seq - n : seq].long()
        args["k_buffer"][slots] = args["k_extend"][start : start + n] + 1.0  # differs from k_extend
    expected = _extend_reference(args, new_from_cache=True)
    args["k_extend"] = args["v_extend"] = None
    ops.extend_attention_cpu(**args)
    torch.testing.assert_close(args["o_extend"].double(), expected, **TOL)


def test_plan_is_shared_by_layers_and_rebuilt_when_its_inputs_change():
    """One forward pass: every layer gets the same plan object. A new seq_lens tensor, or the same
    one changed in place (the scheduler reuses buffers), must give a new, correct plan."""
    args = _decode_case(torch.Generator().manual_seed(4), [10, 30])
    table, reqs, seq = args["req_to_token"], args["req_pool_indices"], args["seq_lens"]
    first = ops._decode_plan(table, reqs, seq, HEADS // KV_HEADS)
    assert ops._decode_plan(table, reqs, seq, HEADS // KV_HEADS) is first
    assert ops._decode_plan(table, reqs, seq.clone(), HEADS // KV_HEADS) is not first
    seq.add_(1)  # in place: the next step of the same requests
    args["loc"] = table[reqs, seq - 1].long()
    args["output"].fill_(float("nan"))
    ops.decode_attention_cpu(**args)
    torch.testing.assert_close(args["output"].double(), _decode_reference(args), **TOL)
    table[reqs[0], 0] = table[reqs[0], 63]  # a page remapped in place
    ops.decode_attention_cpu(**args)
    torch.testing.assert_close(args["output"].double(), _decode_reference(args), **TOL)


def test_verify_rows_match_one_request_at_a_time():
    """A batched tree verify gives each request what it gets alone (no cross-request leakage)."""
    gen = torch.Generator().manual_seed(5)
    args = _extend_case(gen, [6, 33, 19], [8, 8, 8], tree=True)
    ops.extend_attention_cpu(**args)
    batched = args["o_extend"].clone()
    blocks = args["tree_mask"].view(3, 8, 8)
    for b in range(3):
        alone = dict(args)
        rows = slice(8 * b, 8 * b + 8)
        alone.update(
            q_extend=args["q_extend"][rows],
            k_extend=args["k_extend"][rows],
            v_extend=args["v_extend"][rows],
            o_extend=torch.empty(8, HEADS, DIM),
            req_pool_indices=args["req_pool_indices"][b : b + 1],
            seq_lens=args["seq_lens"][b : b + 1],
            extend_seq_lens=args["extend_seq_lens"][b : b + 1],
            extend_start_loc=torch.zeros(1, dtype=torch.int32),
            tree_mask=blocks[b].flatten(),
        )
        ops.extend_attention_cpu(**alone)
        torch.testing.assert_close(alone["o_extend"], batched[rows], atol=1e-6, rtol=1e-6)
