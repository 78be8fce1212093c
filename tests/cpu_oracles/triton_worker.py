"""Oracle process: runs SGLang's own Triton kernels on CPU tensors in Triton's interpreter.

tests/test_cpu_ops.py starts this script as a subprocess with TRITON_INTERPRET=1 (Triton picks
the interpreter when it is first imported, so it must be a separate process, and importing
SGLang's kernels once is cheaper than once per test). Protocol: each stdin line is the path of a
torch.save'd {"oracle": name, "args": {...}}; the worker saves the oracle's dict of outputs to
<path>.out and answers one stdout line, "ORACLE ok" or "ORACLE error <message>".

Every oracle launches the kernel the way SGLang's GPU path launches it, on buffers this process
allocates (device pointers cannot cross processes). The interpreter gets bf16 arithmetic
wrong (numpy has no bf16), so the attention oracles run in fp32 on upcast copies of the inputs,
which bf16 and fp8 values convert to exactly.
"""

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402
import triton  # noqa: E402
from sglang.kernels.ops.attention.decode_attention import decode_attention_fwd  # noqa: E402
from sglang.kernels.ops.attention.extend_attention import extend_attention_fwd  # noqa: E402
from sglang.kernels.ops.kvcache.cache_move import copy_all_layer_kv_cache_tiled  # noqa: E402
from sglang.kernels.ops.speculative import cache_locs, eagle, spec_tree  # noqa: E402
from sglang.srt.mem_cache.allocation import assign_req_to_token_pool  # noqa: E402
from sglang.srt.utils import next_power_of_2  # noqa: E402


def copy_all_layer_kv_cache(buffers, tgt_loc, src_loc):
    data_ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.uint64)
    strides = torch.tensor([b.stride(0) * b.element_size() for b in buffers])
    bytes_per_tile = 128
    grid = (len(buffers), triton.cdiv(int(strides.max()), bytes_per_tile))
    num = tgt_loc.numel()
    copy_all_layer_kv_cache_tiled[grid](
        data_ptrs,
        strides,
        tgt_loc,
        src_loc,
        num,
        next_power_of_2(num),
        BYTES_PER_TILE=bytes_per_tile,
    )
    return {"buffers": buffers}


def assign_draft_cache_locs_contiguous(req_pool_indices, req_to_token, seq_lens, topk, num_steps):
    bs = seq_lens.numel()
    out = torch.full((bs * topk * num_steps,), -7, dtype=torch.int64)
    cache_locs.assign_draft_cache_locs_contiguous[(bs,)](
        req_pool_indices,
        req_to_token,
        seq_lens,
        out,
        req_to_token.shape[1],
        topk,
        num_steps,
        BS=bs,
    )
    return {"out_cache_loc": out}


def assign_extend_cache_locs(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc):
    bs = req_pool_indices.numel()
    cache_locs.assign_extend_cache_locs[(bs,)](
        req_pool_indices,
        req_to_token,
        start_offset,
        end_offset,
        out_cache_loc,
        req_to_token.shape[1],
        next_power_of_2(bs),
    )
    return {"out_cache_loc": out_cache_loc}


def assign_req_to_token_pool_oracle(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc):
    bs = req_pool_indices.numel()
    assign_req_to_token_pool[(bs,)](
        req_pool_indices,
        req_to_token,
        start_offset,
        end_offset,
        out_cache_loc,
        req_to_token.shape[1],
        next_power_of_2(bs),
    )
    return {"req_to_token": req_to_token}


def fill_bonus_tokens(accept_tokens, accept_lens, bonus_tokens, accept_stride):
    eagle.fill_bonus_tokens[(accept_lens.numel(),)](accept_tokens, accept_lens, bonus_tokens, accept_stride)
    return {"bonus_tokens": bonus_tokens}


def fill_accept_out_cache_loc(accept_index, out_cache_loc, accept_out_cache_loc):
    size = accept_index.numel()
    eagle.fill_accept_out_cache_loc[(size,)](accept_index, out_cache_loc, accept_out_cache_loc, next_power_of_2(size))
    return {"accept_out_cache_loc": accept_out_cache_loc}


def draft_decode_kv_indices(req_pool_indices, req_to_token, seq_lens, topk, num_steps):
    """generate_draft_decode_kv_indices as the flashinfer backend launches it; returns the
    last draft step's kv_indices / kv_indptr (one row per request x candidate)."""
    bs = seq_lens.numel()
    kv_indices = torch.full((num_steps, int(seq_lens.sum()) * topk + bs * topk * num_steps), -1, dtype=torch.int64)
    kv_indptr = torch.zeros((num_steps, bs * topk + 1), dtype=torch.int64)
    cache_locs.generate_draft_decode_kv_indices[(num_steps, bs, topk)](
        req_pool_indices,
        req_to_token,
        seq_lens,
        kv_indices,
        kv_indptr,
        seq_lens.repeat_interleave(topk),
        req_to_token.shape[1],
        kv_indices.shape[1],
        kv_indptr.shape[1],
        next_power_of_2(bs),
        next_power_of_2(num_steps),
        next_power_of_2(bs * topk),
        1,
    )
    return {"kv_indices": kv_indices[-1], "kv_indptr": kv_indptr[-1]}


def build_tree(
    parent_list,
    selected_index,
    verified_seq_len,
    tree_mask,
    positions,
    retrive_index,
    retrive_next_token,
    retrive_next_sibling,
    topk,
    depth,
    draft_token_num,
    tree_mask_mode,
):
    spec_tree.sgl_build_tree_kernel_triton(
        parent_list,
        selected_index,
        verified_seq_len,
        tree_mask,
        positions,
        retrive_index,
        retrive_next_token,
        retrive_next_sibling,
        topk,
        depth,
        draft_token_num,
        spec_tree.TreeMaskMode(tree_mask_mode),
    )
    return {
        "tree_mask": tree_mask,
        "positions": positions,
        "retrive_index": retrive_index,
        "retrive_next_token": retrive_next_token,
        "retrive_next_sibling": retrive_next_sibling,
    }


def verify_tree_greedy(
    predicts,
    accept_index,
    accept_token_num,
    candidates,
    retrive_index,
    retrive_next_token,
    retrive_next_sibling,
    target_predict,
):
    spec_tree.verify_tree_greedy_triton(
        predicts,
        accept_index,
        accept_token_num,
        candidates,
        retrive_index,
        retrive_next_token,
        retrive_next_sibling,
        target_predict,
    )
    return {"predicts": predicts, "accept_index": accept_index, "accept_token_num": accept_token_num}


def _indptr(lengths):
    """int32 offsets of consecutive segments of the given lengths."""
    indptr = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return indptr


def _csr(rows):
    """Concatenated index rows and their offsets: the (indptr, indices) pair Triton reads."""
    return _indptr([len(r) for r in rows]), torch.cat(rows).to(torch.int64)


def decode_attention(
    query,
    k_buffer,
    v_buffer,
    req_to_token,
    req_pool_indices,
    seq_lens,
    encoder_lens,
    is_cross_attention,
    sliding_window_size,
    sm_scale,
    k_scale,
    v_scale,
    logit_cap,
    sinks,
):
    """decode_attention_fwd over the slots SGLang's triton backend would list: the encoder
    part for cross-attention, else the request's tokens after it, cut to the last
    `sliding_window_size` (the CPU kernel's window + 1 convention) when > 0."""
    rows = []
    for i in range(seq_lens.numel()):
        row = req_to_token[int(req_pool_indices[i])]
        encoder_len = int(encoder_lens[i]) if encoder_lens is not None else 0
        if is_cross_attention:
            rows.append(row[:encoder_len])
            continue
        seq_len = int(seq_lens[i])
        kept = min(seq_len, sliding_window_size) if sliding_window_size > 0 else seq_len
        rows.append(row[encoder_len + seq_len - kept : encoder_len + seq_len])
    kv_indptr, kv_indices = _csr(rows)
    bs, heads, dv = query.shape[0], query.shape[1], v_buffer.shape[-1]
    splits = 4
    out = torch.empty(bs, heads, dv, dtype=torch.float32)
    decode_attention_fwd(
        query.float(),
        k_buffer.float(),
        v_buffer.float(),
        out,
        kv_indptr,
        kv_indices,
        torch.empty(bs, heads, splits, dv),
        torch.empty(bs, heads, splits),
        torch.full((bs,), splits, dtype=torch.int32),
        splits,
        sm_scale,
        k_scale,
        v_scale,
        logit_cap=logit_cap,
        sinks=None if sinks is None else sinks.float(),
    )
    return {"output": out}


def extend_attention(
    q_extend,
    k_extend,
    v_extend,
    k_buffer,
    v_buffer,
    req_to_token,
    req_pool_indices,
    seq_lens,
    extend_seq_lens,
    encoder_lens,
    is_cross_attention,
    sliding_window_size,
    tree_mask,
    is_causal,
    sm_scale,
    k_scale,
    v_scale,
    logit_cap,
    sinks,
):
    """extend_attention_fwd as SGLang's triton backend drives it. Requests' new tokens are
    contiguous in q_extend. The prefix is the request's cached slots before its new tokens
    (after its encoder part); cross-attention reads the encoder slots as "prefix" and skips the
    new-token stage. A QLEN_ONLY tree mask becomes Triton's per-request [extend, seq_len] rows."""
    ext = extend_seq_lens.tolist()
    prefix_rows, mask_rows = [], []
    mask_start = 0
    for i, n in enumerate(ext):
        row = req_to_token[int(req_pool_indices[i])]
        encoder_len = int(encoder_lens[i]) if encoder_lens is not None else 0
        if is_cross_attention:
            prefix_rows.append(row[:encoder_len])
            continue
        prefix_len = int(seq_lens[i]) - n
        prefix_rows.append(row[encoder_len : encoder_len + prefix_len])
        if tree_mask is not None:
            block = tree_mask[mask_start : mask_start + n * n].view(n, n)
            mask_start += n * n
            prefix = torch.ones(n, prefix_len, dtype=torch.bool)
            mask_rows.append(torch.cat([prefix, block], 1).flatten())
    kv_indptr, kv_indices = _csr(prefix_rows)
    custom_mask = mask_indptr = None
    if mask_rows:
        mask_indptr, custom_mask = _indptr([len(m) for m in mask_rows]), torch.cat(mask_rows)
    out = torch.empty(q_extend.shape[0], q_extend.shape[1], v_buffer.shape[-1])
    extend_attention_fwd(
        q_extend.float(),
        k_extend.float(),
        v_extend.float(),
        out,
        k_buffer.float(),
        v_buffer.float(),
        _indptr(ext),
        kv_indptr,
        kv_indices,
        custom_mask,
        is_causal,
        mask_indptr,
        max(ext),
        k_scale,
        v_scale,
        sm_scale=sm_scale,
        logit_cap=logit_cap,
        sliding_window_size=sliding_window_size - 1 if sliding_window_size > 0 else -1,
        sinks=None if sinks is None else sinks.float(),
        skip_extend=is_cross_attention,
    )
    return {"output": out}


ORACLES = {
    "copy_all_layer_kv_cache": copy_all_layer_kv_cache,
    "assign_draft_cache_locs_contiguous": assign_draft_cache_locs_contiguous,
    "assign_extend_cache_locs": assign_extend_cache_locs,
    "assign_req_to_token_pool": assign_req_to_token_pool_oracle,
    "fill_bonus_tokens": fill_bonus_tokens,
    "fill_accept_out_cache_loc": fill_accept_out_cache_loc,
    "draft_decode_kv_indices": draft_decode_kv_indices,
    "build_tree": build_tree,
    "verify_tree_greedy": verify_tree_greedy,
    "decode_attention": decode_attention,
    "extend_attention": extend_attention,
}


def main() -> None:
    print("ORACLE ready", flush=True)
    for line in sys.stdin:
        path = line.strip()
        try:
            request = torch.load(path)
            torch.save(ORACLES[request["oracle"]](**request["args"]), path + ".out")
            print("ORACLE ok", flush=True)
        except Exception as error:  # reported to the test, which fails with it
            print(f"ORACLE error {type(error).__name__}: {error}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
