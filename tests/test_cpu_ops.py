"""The torch-native sgl_kernel CPU ops (sglang_edsd.cpu_support) against independent oracles.

The oracle for every op is SGLang's own Triton kernel for the same step, run on CPU tensors in
Triton's interpreter inside one subprocess (tests/cpu_oracles/triton_worker.py), so neither the
test order nor this process's Triton state matters. Integer results must match exactly,
attention within a tolerance fitting the output dtype. Inputs are random, from fixed seeds.
The install tests run in fresh subprocesses because installing changes the process for good.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sglang_edsd.cpu_support import ops

REPO_ROOT = Path(__file__).resolve().parents[1]
ORACLE_WORKER = Path(__file__).parent / "cpu_oracles" / "triton_worker.py"
# Attention tolerances: fp32 differs from the oracle by summation order only; bf16 adds the
# rounding of the output (half an ulp, 2**-9 relative).
TOLERANCE = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.bfloat16: dict(atol=1e-3, rtol=1.6e-2),
}


class TritonOracle:
    """Client of the oracle worker: `oracle(name, **args)` returns the kernel's outputs."""

    def __init__(self, workdir: Path):
        # SGLang's GPU code path, and nothing of ours on the path (no sgl_kernel shim)
        dropped = ("SGLANG_USE_CPU_ENGINE", "PYTHONPATH")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env["TRITON_INTERPRET"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, str(ORACLE_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.workdir = workdir
        self.requests = 0
        assert self._answer() == "ready"

    def _answer(self) -> str:
        for line in self.process.stdout:
            if line.startswith("ORACLE "):
                return line.removeprefix("ORACLE ").strip()
        raise RuntimeError("the oracle worker exited; its stderr is in the captured output")

    def __call__(self, oracle: str, **args) -> dict:
        self.requests += 1
        path = str(self.workdir / f"request{self.requests}.pt")
        torch.save({"oracle": oracle, "args": args}, path)
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        assert answer == "ok", f"oracle {oracle}: {answer}"
        return torch.load(path + ".out")

    def close(self) -> None:
        self.process.kill()  # nothing to flush; skips a slow interpreter shutdown
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def triton_oracle(tmp_path_factory):
    oracle = TritonOracle(tmp_path_factory.mktemp("oracle"))
    yield oracle
    oracle.close()


def _req_to_token(gen: torch.Generator, num_reqs: int, pool_len: int) -> torch.Tensor:
    """An int32 req_to_token table whose cells are distinct KV slots, so misplaced reads show."""
    return torch.randperm(num_reqs * pool_len, generator=gen).view(num_reqs, pool_len).int()


def _draft_tree(gen: torch.Generator, bs: int, topk: int, steps: int, num_draft: int):
    """(parent_list, selected_index) as EAGLE's draft loop lays them out: step 0 offers the
    root's topk children; each later step expands the topk best beams into topk children each
    (parent ids offset by topk * topk * (step - 1) + topk) and keeps the topk best; finally the
    num_draft - 1 best of all offered nodes are selected, sorted. Child scores are products of
    probabilities, so a selected node's parent is always selected too."""
    offered = [torch.rand(bs, topk, generator=gen)]
    parents = [torch.arange(-1, topk).expand(bs, -1)]
    beam = offered[0]
    for step in range(1, steps):
        children = (beam[:, :, None] * torch.rand(bs, topk, topk, generator=gen)).flatten(1)
        beam, picked = children.topk(topk, dim=-1)
        offered.append(children)
        parents.append(picked + topk * topk * (step - 1) + topk)
    selected = torch.cat(offered, 1).topk(num_draft - 1, dim=-1).indices.sort(-1).values
    parent_list = torch.cat(parents[:-1], 1) if steps > 1 else torch.empty(bs, 0, dtype=torch.long)
    return parent_list, selected


def _tree_buffers(bs: int, n: int, seq_lens: torch.Tensor, mode: int) -> dict:
    """Output buffers pre-filled the way eagle_utils.build_tree_kernel_efficient does."""
    mask_len = bs * n * n if mode == 1 else int(seq_lens.sum()) * n + bs * n * n
    retrive = torch.full((3, bs, n), -1, dtype=torch.long)
    return dict(
        tree_mask=torch.ones(mask_len, dtype=torch.bool),
        positions=torch.full((bs * n,), -5, dtype=torch.long),
        retrive_index=retrive[0],
        retrive_next_token=retrive[1],
        retrive_next_sibling=retrive[2],
    )


def _clone(args: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def test_copy_all_layer_kv_cache(triton_oracle):
    gen = torch.Generator().manual_seed(1)
    buffers = [torch.randn(40, 3, 8, generator=gen).bfloat16() for _ in range(4)]
    buffers += [torch.randn(40, 5, generator=gen)]  # another row size and dtype
    # distinct targets; sources overlap targets (a chain 2 -> 3 -> 4 -> 5 included)
    tgt = torch.cat([torch.tensor([3, 4, 5]), 6 + torch.randperm(34, generator=gen)[:9]])
    src = torch.cat([torch.tensor([2, 3, 4]), torch.randint(0, 40, (9,), generator=gen)])
    ours = [b.clone() for b in buffers]
    ops.copy_all_layer_kv_cache_cpu(
        torch.tensor([b.data_ptr() for b in ours], dtype=torch.uint64),
        torch.tensor([b.stride(0) * b.element_size() for b in ours]),
        tgt,
        src,
    )
    expected = triton_oracle("copy_all_layer_kv_cache", buffers=buffers, tgt_loc=tgt, src_loc=src)
    for mine, theirs in zip(ours, expected["buffers"]):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("lens_dtype", [torch.int64, torch.int32])
def test_assign_draft_cache_locs_contiguous(triton_oracle, lens_dtype):
    gen = torch.Generator().manual_seed(2)
    topk, num_steps, pool_len = 3, 4, 64
    req_to_token = _req_to_token(gen, 7, pool_len)
    args = dict(
        req_pool_indices=torch.randperm(7, generator=gen)[:5],
        req_to_token=req_to_token,
        seq_lens=torch.randint(0, pool_len - topk * num_steps, (5,), generator=gen).to(lens_dtype),
    )
    out = torch.full((5 * topk * num_steps,), -7, dtype=torch.int64)
    ops.assign_draft_cache_locs_contiguous_cpu(
        **args, out_cache_loc=out, pool_len=pool_len, topk=topk, num_steps=num_steps
    )
    expected = triton_oracle("assign_draft_cache_locs_contiguous", **args, topk=topk, num_steps=num_steps)
    assert torch.equal(out, expected["out_cache_loc"])


def _ragged_ranges(gen: torch.Generator, bs: int, pool_len: int, dtype: torch.dtype):
    start = torch.randint(0, pool_len // 2, (bs,), generator=gen)
    end = start + torch.randint(0, pool_len // 2, (bs,), generator=gen)
    end[1] = start[1]  # an empty range
    return start.to(dtype), end.to(dtype)


@pytest.mark.parametrize("offset_dtype", [torch.int64, torch.int32])
def test_assign_extend_cache_locs(triton_oracle, offset_dtype):
    gen = torch.Generator().manual_seed(3)
    start, end = _ragged_ranges(gen, 6, 48, offset_dtype)
    args = dict(
        req_pool_indices=torch.randperm(9, generator=gen)[:6],
        req_to_token=_req_to_token(gen, 9, 48),
        start_offset=start,
        end_offset=end,
        # sized for more than is written: the tail must stay untouched
        out_cache_loc=torch.full((int((end - start).sum()) + 5,), -7, dtype=torch.int64),
    )
    ours = _clone(args)
    ops.assign_extend_cache_locs_cpu(**ours, pool_len=48)
    expected = triton_oracle("assign_extend_cache_locs", **args)
    assert torch.equal(ours["out_cache_loc"], expected["out_cache_loc"])


@pytest.mark.parametrize("offset_dtype", [torch.int64, torch.int32])
def test_assign_req_to_token_pool(triton_oracle, offset_dtype):
    gen = torch.Generator().manual_seed(4)
    start, end = _ragged_ranges(gen, 6, 48, offset_dtype)
    args = dict(
        req_pool_indices=torch.randperm(9, generator=gen)[:6].int(),
        req_to_token=_req_to_token(gen, 9, 48),
        start_offset=start,
        end_offset=end,
        out_cache_loc=torch.randperm(5000, generator=gen)[: int((end - start).sum())],
    )
    ours = _clone(args)
    ops.assign_req_to_token_pool_cpu(**ours, pool_len=48)
    expected = triton_oracle("assign_req_to_token_pool", **args)
    assert torch.equal(ours["req_to_token"], expected["req_to_token"])


def test_fill_bonus_tokens(triton_oracle):
    gen = torch.Generator().manual_seed(5)
    bs, stride = 7, 5
    args = dict(
        accept_tokens=torch.randint(0, 32000, (bs, stride), generator=gen, dtype=torch.int32),
        accept_lens=torch.randint(1, stride + 1, (bs,), generator=gen, dtype=torch.int32),
        bonus_tokens=torch.full((bs,), -7, dtype=torch.int32),
    )
    ours = _clone(args)
    ops.fill_bonus_tokens_cpu(**ours, accept_stride=stride)
    expected = triton_oracle("fill_bonus_tokens", **args, accept_stride=stride)
    assert torch.equal(ours["bonus_tokens"], expected["bonus_tokens"])


def test_fill_accept_out_cache_loc(triton_oracle):
    gen = torch.Generator().manual_seed(6)
    bs, steps, num_draft = 5, 4, 8
    # like verify's output: the root and the accepted nodes' flat ids, then -1
    accept_index = torch.full((bs, steps), -1, dtype=torch.int32)
    for b, accepted in enumerate(torch.randint(0, steps, (bs,), generator=gen).tolist()):
        ids = torch.randperm(num_draft - 1, generator=gen)[:accepted] + 1
        path = torch.cat([torch.zeros(1, dtype=torch.long), ids.sort().values])
        accept_index[b, : accepted + 1] = b * num_draft + path
    args = dict(
        accept_index=accept_index,
        out_cache_loc=torch.randperm(1000, generator=gen)[: bs * num_draft],
        accept_out_cache_loc=torch.full((bs * steps,), -7, dtype=torch.int64),
    )
    ours = _clone(args)
    ops.fill_accept_out_cache_loc_cpu(**ours)
    expected = triton_oracle("fill_accept_out_cache_loc", **args)
    assert torch.equal(ours["accept_out_cache_loc"], expected["accept_out_cache_loc"])


def test_build_draft_decode_metadata(triton_oracle):
    gen = torch.Generator().manual_seed(7)
    topk, num_steps, pool_len = 3, 4, 80
    args = dict(
        req_pool_indices=torch.randperm(6, generator=gen)[:4],
        req_to_token=_req_to_token(gen, 6, pool_len),
        seq_lens=torch.tensor([1, 30, 9, 67]),
    )
    rows = ops.build_draft_decode_metadata_cpu(**args, topk=topk, num_steps=num_steps, pool_len=pool_len)
    expected = triton_oracle("draft_decode_kv_indices", **args, topk=topk, num_steps=num_steps)
    assert rows.shape == (4 * topk, pool_len) and rows.dtype == torch.int32
    indptr = expected["kv_indptr"].tolist()
    for r in range(4 * topk):
        defined = int(args["seq_lens"][r // topk]) + num_steps
        oracle_row = expected["kv_indices"][indptr[r] : indptr[r + 1]]
        assert torch.equal(rows[r, :defined].long(), oracle_row)


TREE_CASES = {
    # name: (bs, topk, steps, num_draft, tree_mask_mode)
    "tree_qlen": (3, 4, 3, 10, 1),
    "tree_full": (3, 4, 3, 10, 0),
    "chain_topk1": (2, 1, 4, 5, 1),
    "one_step": (2, 3, 1, 4, 0),
    "orphan_node": (2, 3, 3, 7, 1),
}


@pytest.mark.parametrize("case", TREE_CASES)
def test_build_tree_kernel_efficient(triton_oracle, case):
    bs, topk, steps, n, mode = TREE_CASES[case]
    gen = torch.Generator().manual_seed(8)
    parent_list, selected = _draft_tree(gen, bs, topk, steps, n)
    if case == "orphan_node":  # point a deep node's parent at a token that was not selected
        deep = int((selected[0] >= topk).nonzero()[-1])
        parent_list[0, int(selected[0, deep]) // topk] = 10_000
    seq_lens = torch.randint(3, 40, (bs,), generator=gen)
    args = dict(parent_list=parent_list, selected_index=selected, verified_seq_len=seq_lens)
    buffers = _tree_buffers(bs, n, seq_lens, mode)
    sizes = dict(topk=topk, depth=steps, draft_token_num=n, tree_mask_mode=mode)
    ours = _clone(buffers)
    ops.build_tree_kernel_efficient_cpu(**args, **ours, **sizes)
    expected = triton_oracle("build_tree", **args, **buffers, **sizes)
    for name, value in ours.items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize("topk,steps,n", [(3, 3, 8), (1, 4, 5)])
def test_verify_tree_greedy(triton_oracle, topk, steps, n):
    gen = torch.Generator().manual_seed(9)
    bs = 6
    parent_list, selected = _draft_tree(gen, bs, topk, steps, n)
    tree = _tree_buffers(bs, n, torch.zeros(bs, dtype=torch.long), 1)
    ops.build_tree_kernel_efficient_cpu(
        parent_list,
        selected,
        torch.zeros(bs, dtype=torch.long),
        **tree,
        topk=topk,
        depth=steps,
        draft_token_num=n,
        tree_mask_mode=1,
    )
    # a 3-token vocabulary makes accepts, rejects and sibling hops all common
    candidates = torch.randint(0, 3, (bs, n), generator=gen)
    target_predict = torch.randint(0, 3, (bs, n), generator=gen)
    node, chain = 0, 0  # request 0 accepts its whole first-child chain
    while (child := int(tree["retrive_next_token"][0, node])) != -1:
        candidates[0, child] = target_predict[0, node]
        node, chain = child, chain + 1
    args = dict(
        predicts=torch.full((bs * n,), -1, dtype=torch.int32),
        accept_index=torch.full((bs, steps + 1), -1, dtype=torch.int32),
        accept_token_num=torch.zeros(bs, dtype=torch.int32),
        candidates=candidates,
        retrive_index=tree["retrive_index"],
        retrive_next_token=tree["retrive_next_token"],
        retrive_next_sibling=tree["retrive_next_sibling"],
        target_predict=target_predict,
    )
    ours = _clone(args)
    ops.verify_tree_greedy_cpu(**ours)
    expected = triton_oracle("verify_tree_greedy", **args)
    assert int(ours["accept_token_num"][0]) == chain
    for name in ("predicts", "accept_index", "accept_token_num"):
        assert torch.equal(ours[name], expected[name]), name


def _kv_cache(gen, rows, kv_heads, head_dim, v_head_dim, dtype, shared_kv=False):
    """K and V cache buffers; shared_kv makes V a view of K's leading dims (MLA layout)."""
    k = torch.randn(rows, kv_heads, head_dim, generator=gen).to(dtype)
    if shared_kv:
        return k, k[..., :v_head_dim]
    return k, torch.randn(rows, kv_heads, v_head_dim, generator=gen).to(dtype)


DECODE_CASES = {
    # name: dict of case options (defaults in _decode_args)
    "gqa_9q_3kv_bf16_writes_kv": dict(dtype=torch.bfloat16),
    "gqa_fp32_cap_sinks_window": dict(logit_cap=2.0, sinks=True, window=6),
    "self_attention_after_encoder": dict(encoder=True),
    "cross_attention": dict(encoder=True, cross=True, new_kv=False),
    "mla_fp8_cache_scaled": dict(
        kv_heads=1,
        head_dim=48,
        v_head_dim=32,
        heads=4,
        cache_dtype=torch.float8_e4m3fn,
        scales=(0.5, 1.5),
        new_kv=False,
    ),
}


def _decode_args(
    gen,
    dtype=torch.float32,
    heads=9,
    kv_heads=3,
    head_dim=64,
    v_head_dim=64,
    cache_dtype=None,
    scales=(1.0, 1.0),
    logit_cap=0.0,
    sinks=False,
    window=0,
    encoder=False,
    cross=False,
    new_kv=True,
) -> dict:
    seq_lens = torch.tensor([1, 13, 40, 7, 25])
    bs, pool_len, num_reqs = len(seq_lens), 80, 8
    encoder_lens = torch.tensor([4, 2, 9, 3, 6]) if encoder else None
    req_to_token = _req_to_token(gen, num_reqs, pool_len)
    req_pool_indices = torch.randperm(num_reqs, generator=gen)[:bs]
    offset = encoder_lens if encoder else torch.zeros(bs, dtype=torch.long)
    shared_kv = v_head_dim != head_dim
    k_buffer, v_buffer = _kv_cache(
        gen, num_reqs * pool_len, kv_heads, head_dim, v_head_dim, cache_dtype or dtype, shared_kv
    )
    key = value = None
    if new_kv:
        key = torch.randn(bs, kv_heads, head_dim, generator=gen).to(dtype)
        value = torch.randn(bs, kv_heads, v_head_dim, generator=gen).to(dtype)
    return dict(
        query=torch.randn(bs, heads, head_dim, generator=gen).to(dtype),
        k_buffer=k_buffer,
        v_buffer=v_buffer,
        k_scale=scales[0],
        v_scale=scales[1],
        output=torch.full((bs, heads, v_head_dim), float("nan"), dtype=dtype),
        key=key,
        value=value,
        loc=req_to_token[req_pool_indices, offset + seq_lens - 1].long(),  # the new token's slot
        attn_logits=torch.empty(bs, heads, 8, v_head_dim + 1),
        req_to_token=req_to_token,
        req_pool_indices=req_pool_indices,
        seq_lens=seq_lens,
        sm_scale=head_dim**-0.5,
        logit_cap=logit_cap,
        is_cross_attention=cross,
        sliding_window_size=window,
        encoder_lens=encoder_lens,
        sinks=torch.randn(heads, generator=gen) if sinks else None,
    )


@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_attention(triton_oracle, case):
    gen = torch.Generator().manual_seed(10)
    args = _decode_args(gen, **DECODE_CASES[case])
    ours = _clone(args)
    ops.decode_attention_cpu(**ours)
    cache = {name: args[name].clone() for name in ("k_buffer", "v_buffer")}
    if args["key"] is not None:  # the kernel stores the new token's K/V before attending
        cache["k_buffer"][args["loc"]] = args["key"]
        cache["v_buffer"][args["loc"]] = args["value"]
        for name in cache:
            assert torch.equal(ours[name], cache[name]), name
    oracle_args = {
        name: args[name]
        for name in (
            "query",
            "req_to_token",
            "req_pool_indices",
            "seq_lens",
            "encoder_lens",
            "is_cross_attention",
            "sliding_window_size",
            "sm_scale",
            "k_scale",
            "v_scale",
            "logit_cap",
            "sinks",
        )
    }
    expected = triton_oracle("decode_attention", **oracle_args, **cache)
    torch.testing.assert_close(ours["output"].float(), expected["output"], **TOLERANCE[args["query"].dtype])


EXTEND_CASES = {
    # name: dict of case options (defaults in _extend_args; extend_kv=False passes no K/V)
    "prefill_9q_3kv_bf16_mixed_prefixes": dict(dtype=torch.bfloat16),
    "fp32_cap_sinks_window": dict(logit_cap=2.0, sinks=True, window=6),
    "target_verify_tree_mask_bf16": dict(dtype=torch.bfloat16, tree=True),
    "non_causal_window": dict(causal=False, window=4),
    "cross_attention": dict(encoder=True, cross=True),
    "kv_shared_layer_reads_cache": dict(encoder=True, extend_kv=False),
    "mla_fp8_cache_scaled": dict(
        dtype=torch.bfloat16,
        kv_heads=1,
        head_dim=48,
        v_head_dim=32,
        heads=4,
        cache_dtype=torch.float8_e4m3fn,
        scales=(0.5, 1.5),
    ),
}


def _extend_args(
    gen,
    dtype=torch.float32,
    heads=9,
    kv_heads=3,
    head_dim=64,
    v_head_dim=64,
    cache_dtype=None,
    scales=(1.0, 1.0),
    logit_cap=0.0,
    sinks=False,
    window=0,
    encoder=False,
    cross=False,
    causal=True,
    tree=False,
) -> dict:
    prefix_lens = torch.tensor([0, 5, 17, 30])
    extend_lens = torch.tensor([7, 1, 12, 20])
    bs, pool_len, num_reqs = len(prefix_lens), 80, 6
    tree_mask = None
    if tree:  # target verify: draft_token_num new tokens each, masked by the draft tree
        topk, steps, n = 3, 3, 8
        extend_lens = torch.full((bs,), n)
        parent_list, selected = _draft_tree(gen, bs, topk, steps, n)
        buffers = _tree_buffers(bs, n, prefix_lens, 1)
        ops.build_tree_kernel_efficient_cpu(
            parent_list,
            selected,
            prefix_lens,
            **buffers,
            topk=topk,
            depth=steps,
            draft_token_num=n,
            tree_mask_mode=1,
        )
        tree_mask = buffers["tree_mask"]
    seq_lens = prefix_lens + extend_lens
    encoder_lens = torch.tensor([4, 0, 9, 3]) if encoder else None
    offset = encoder_lens if encoder else torch.zeros(bs, dtype=torch.long)
    req_to_token = _req_to_token(gen, num_reqs, pool_len)
    req_pool_indices = torch.randperm(num_reqs, generator=gen)[:bs]
    shared_kv = v_head_dim != head_dim
    k_buffer, v_buffer = _kv_cache(
        gen, num_reqs * pool_len, kv_heads, head_dim, v_head_dim, cache_dtype or dtype, shared_kv
    )
    tokens = int(extend_lens.sum())
    k_extend, v_extend = _kv_cache(gen, tokens, kv_heads, head_dim, v_head_dim, dtype, shared_kv)
    start_loc = torch.cumsum(extend_lens, 0) - extend_lens
    for i in range(bs):  # SGLang stores the new tokens' K/V in the cache before attending
        cached = offset[i] + torch.arange(prefix_lens[i], seq_lens[i])
        slots = req_to_token[req_pool_indices[i], cached].long()
        new = slice(start_loc[i], start_loc[i] + extend_lens[i])
        k_buffer[slots] = k_extend[new].to(k_buffer.dtype)
        if not shared_kv:
            v_buffer[slots] = v_extend[new].to(v_buffer.dtype)
    return dict(
        q_extend=torch.randn(tokens, heads, head_dim, generator=gen).to(dtype),
        k_extend=k_extend,
        v_extend=v_extend,
        o_extend=torch.full((tokens, heads, v_head_dim), float("nan"), dtype=dtype),
        k_buffer=k_buffer,
        v_buffer=v_buffer,
        k_scale=scales[0],
        v_scale=scales[1],
        req_to_token=req_to_token,
        req_pool_indices=req_pool_indices,
        seq_lens=seq_lens,
        extend_seq_lens=extend_lens.int(),
        extend_start_loc=start_loc.int(),
        max_len_extend=int(extend_lens.max()),
        sm_scale=head_dim**-0.5,
        logit_cap=logit_cap,
        is_cross_attention=cross,
        sliding_window_size=window,
        encoder_lens=encoder_lens,
        sinks=torch.randn(heads, generator=gen) if sinks else None,
        tree_mask=tree_mask,
        is_causal=causal,
    )


@pytest.mark.parametrize("case", EXTEND_CASES)
def test_extend_attention(triton_oracle, case):
    gen = torch.Generator().manual_seed(11)
    options = dict(EXTEND_CASES[case])
    extend_kv = options.pop("extend_kv", True)
    args = _extend_args(gen, **options)
    ours = _clone(args)
    if not extend_kv:  # Gemma-4 KV-shared layers pass no K/V: the kernel reads the cache
        ours["k_extend"] = ours["v_extend"] = None
    ops.extend_attention_cpu(**ours)
    oracle_args = {
        name: args[name]
        for name in (
            "q_extend",
            "k_extend",
            "v_extend",
            "k_buffer",
            "v_buffer",
            "req_to_token",
            "req_pool_indices",
            "seq_lens",
            "extend_seq_lens",
            "encoder_lens",
            "is_cross_attention",
            "sliding_window_size",
            "tree_mask",
            "is_causal",
            "sm_scale",
            "k_scale",
            "v_scale",
            "logit_cap",
            "sinks",
        )
    }
    expected = triton_oracle("extend_attention", **oracle_args)
    torch.testing.assert_close(ours["o_extend"].float(), expected["output"], **TOLERANCE[args["q_extend"].dtype])


def _run_fresh(script: str, **env: str) -> str:
    """Run `script` in a fresh interpreter whose path holds the repository and nothing of an
    enabled parent's (such as its child_path sgl_kernel shim); return its stdout."""
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_install_reaches_both_routes_and_sglang_call_sites():
    out = _run_fresh(
        """
        import torch
        from sglang_edsd.cpu_support.install import OP_NAMES, install_cpu_ops

        assert install_cpu_ops() == list(OP_NAMES)
        assert install_cpu_ops() == []  # idempotent
        import sgl_kernel
        for name in OP_NAMES:
            exec(f"from sgl_kernel import {name}")
            assert getattr(sgl_kernel, name) is getattr(torch.ops.sgl_kernel, name)

        # SGLang's CPU call sites import at module load and dispatch to the ops
        from sglang.kernels.ops.speculative.eagle import fill_bonus_tokens_func
        from sglang.kernels.ops.speculative.spec_tree import verify_tree_greedy_func
        import sglang.kernels.ops.kvcache.cache_move, sglang.kernels.ops.speculative.cache_locs

        bonus = torch.empty(2, dtype=torch.int32)
        fill_bonus_tokens_func(torch.tensor([[5, 6], [7, 8]], dtype=torch.int32),
                               torch.tensor([2, 1], dtype=torch.int32), bonus, 2, 2)
        assert bonus.tolist() == [6, 7]
        predicts = torch.full((3,), -1, dtype=torch.int32)  # keyword call: the retrive_* names
        accept_index = torch.full((1, 3), -1, dtype=torch.int32)
        accept_num = torch.zeros(1, dtype=torch.int32)
        chain = dict(retrieve_index=torch.tensor([[0, 1, 2]]),
                     retrieve_next_token=torch.tensor([[1, 2, -1]]),
                     retrieve_next_sibling=torch.full((1, 3), -1))
        verify_tree_greedy_func(predicts, accept_index, accept_num, torch.tensor([[9, 4, 8]]),
                                **chain, target_predict=torch.tensor([[4, 5, 6]]))
        assert accept_index.tolist() == [[0, 1, -1]] and accept_num.tolist() == [1]
        assert predicts.tolist() == [4, 5, -1]

        # torch.compile traces around the ops, in-place outputs included
        def step(tokens, lens, bonus, table, reqs, seq_lens):
            torch.ops.sgl_kernel.fill_bonus_tokens_cpu(tokens, lens, bonus, 3)
            rows = torch.ops.sgl_kernel.build_draft_decode_metadata_cpu(
                table, reqs, seq_lens, 2, 2, 12
            )
            return rows.sum() + bonus.sum()

        tokens = torch.arange(6, dtype=torch.int32).view(2, 3)
        lens = torch.tensor([3, 1], dtype=torch.int32)
        table = torch.arange(36, dtype=torch.int32).view(3, 12)
        reqs, seq_lens = torch.tensor([2, 0]), torch.tensor([3, 5])
        eager_bonus = torch.zeros(2, dtype=torch.int32)
        compiled_bonus = eager_bonus.clone()
        compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
        got = compiled(tokens, lens, compiled_bonus, table, reqs, seq_lens)
        assert got == step(tokens, lens, eager_bonus, table, reqs, seq_lens)
        assert torch.equal(compiled_bonus, eager_bonus) and eager_bonus.tolist() == [2, 3]
        print("ROUTES OK")
        """,
        SGLANG_USE_CPU_ENGINE="1",
    )
    assert "ROUTES OK" in out


def test_install_leaves_an_importable_sgl_kernel_alone():
    out = _run_fresh(
        """
        import sys, types, torch
        real = types.ModuleType("sgl_kernel")
        real.fill_bonus_tokens_cpu = marker = object()
        sys.modules["sgl_kernel"] = real  # stands for a CPU build that imports

        @torch.library.custom_op("sgl_kernel::decode_attention_cpu", mutates_args=())
        def native(x: torch.Tensor) -> None:  # stands for the build's native op
            pass

        from sglang_edsd.cpu_support.install import OP_NAMES, install_cpu_ops

        installed = install_cpu_ops()
        assert installed == [n for n in OP_NAMES if n != "decode_attention_cpu"], installed
        import sgl_kernel
        assert sgl_kernel is real and real.fill_bonus_tokens_cpu is marker
        assert real.decode_attention_cpu is torch.ops.sgl_kernel.decode_attention_cpu
        assert "x" in str(torch.ops.sgl_kernel.decode_attention_cpu.default._schema)
        assert install_cpu_ops() == []
        print("REAL OK")
        """
    )
    assert "REAL OK" in out
