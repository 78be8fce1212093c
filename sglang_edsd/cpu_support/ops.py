"""Torch-native versions of the `sgl_kernel` CPU ops that SGLang's CPU speculative path calls.

PyPI's sgl-kernel ships CUDA code only, so a machine without a GPU has none of the `*_cpu`
ops that SGLang's intel_amx attention backend and its speculative helpers call. Each function
here stands in for one of them: same name, argument names and order, and in-place outputs as
SGLang 0.5.23's call sites, and the semantics of the Triton (or CUDA) kernel SGLang runs for the
same step on a GPU. `install.py` makes them reachable where SGLang looks.

Index tensors may be int32 or int64. Attention accumulates in fp32 whatever the input dtype.
"""

import ctypes

import torch

# Attention scores are materialised per chunk of queries; this caps a chunk at 64 MiB of fp32.
_MAX_SCORES_PER_CHUNK = 1 << 24


def _raw_rows(address: int, row_bytes: int, num_rows: int) -> torch.Tensor:
    """A writable uint8 [num_rows, row_bytes] view of memory known only by its address."""
    memory = (ctypes.c_uint8 * (row_bytes * num_rows)).from_address(address)
    return torch.frombuffer(memory, dtype=torch.uint8).view(num_rows, row_bytes)


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """Copy KV slots `src_loc` to `tgt_loc` in every cache buffer (SGLang's KV slot move).

    Buffers come as raw base addresses (uint64) and row sizes in bytes, because that is what
    the pool hands the kernel. All sources are read before any target is written, so
    overlapping moves behave like Triton's `copy_all_layer_kv_cache_tiled`.
    """
    if tgt_loc.numel() == 0:
        return
    tgt, src = tgt_loc.long(), src_loc.long()
    num_rows = int(torch.maximum(tgt.max(), src.max())) + 1
    for address, row_bytes in zip(data_ptrs.tolist(), strides.tolist()):
        rows = _raw_rows(address, row_bytes, num_rows)
        rows[tgt] = rows[src]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor | None,
    sm_scale: float,
    logit_cap: float,
    sinks: torch.Tensor | None,
) -> torch.Tensor:
    """Softmax attention of q [Lq, Hq, D] over k [Lk, Hkv, D], v [Lk, Hkv, Dv], in fp32.

    Query head h reads kv head h // (Hq // Hkv). Logits are scaled, then soft-capped
    (cap * tanh(x / cap)) when logit_cap > 0; `allowed` [Lq, Lk] hides keys; a sink adds
    exp(sinks[h]) to head h's softmax denominator only. A query with no visible key gets 0.
    """
    lq, hq, d = q.shape
    hkv, dv = k.shape[1], v.shape[2]
    group = hq // hkv
    out = q.new_zeros(lq, hq, dv)
    if k.shape[0] == 0:
        return out
    sink = None if sinks is None else sinks.float().reshape(hkv, group, 1, 1)
    chunk = max(1, _MAX_SCORES_PER_CHUNK // (hq * k.shape[0]))
    for start in range(0, lq, chunk):
        rows = slice(start, start + chunk)
        scores = torch.einsum("qhgd,khd->hgqk", q[rows].reshape(-1, hkv, group, d), k) * sm_scale
        if logit_cap > 0:
            scores = logit_cap * torch.tanh(scores / logit_cap)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[rows], float("-inf"))
        row_max = scores.amax(-1, keepdim=True)
        if sink is not None:
            row_max = torch.maximum(row_max, sink)
        row_max = row_max.nan_to_num(neginf=0.0)  # rows with every key hidden
        probs = torch.exp(scores - row_max)
        denom = probs.sum(-1, keepdim=True)
        if sink is not None:
            denom = denom + torch.exp(sink - row_max)
        probs = probs / denom.masked_fill(denom == 0, 1.0)
        out[rows] = torch.einsum("hgqk,khd->qhgd", probs, v).reshape(-1, hq, dv)
    return out


def _kv_slots(req_to_token: torch.Tensor, req: int, seq_len: int, encoder_len: int, is_cross: bool) -> torch.Tensor:
    """Cache slots a request attends to: its encoder part for cross-attention, else its own
    seq_len tokens, which the pool stores after the encoder part."""
    row = req_to_token[req]
    if is_cross:
        return row[:encoder_len].long()
    return row[encoder_len : encoder_len + seq_len].long()


def _batched_decode(
    query: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    k_scale: float,
    v_scale: float,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    sm_scale: float,
) -> torch.Tensor:
    """Decode attention for the plain case, all requests at once (one gather per layer instead
    of a Python loop over requests: the loop dominated batched CPU decoding)."""
    b, hq, d = query.shape[0], query.shape[1], query.shape[-1]
    max_len = int(seq_lens.max())
    slots = req_to_token[req_pool_indices.long(), :max_len].long()  # (B, L); past seq_len: masked
    visible = torch.arange(max_len, device=slots.device)[None, :] < seq_lens[:, None].to(slots.device)
    slots = slots.masked_fill(~visible, 0)
    k, v = k_buffer[slots], v_buffer[slots]  # (B, L, Hkv, D)
    k = k.float() if k_scale == 1.0 else k.float() * k_scale
    v = v.float() if v_scale == 1.0 else v.float() * v_scale
    hkv = k.shape[2]
    # A kv head's query group plays SDPA's query positions: one fused kernel, no score tensor.
    q = query.float().reshape(b, hkv, hq // hkv, d)
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=visible[:, None, None, :], scale=sm_scale
    )
    return out.nan_to_num(0.0).reshape(b, hq, v.shape[-1])  # a request with no visible key gets 0


def decode_attention_cpu(
    query: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    k_scale: float,
    v_scale: float,
    output: torch.Tensor,
    key: torch.Tensor | None,
    value: torch.Tensor | None,
    loc: torch.Tensor,
    attn_logits: torch.Tensor,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    sm_scale: float,
    logit_cap: float,
    is_cross_attention: bool,
    sliding_window_size: int,
    encoder_lens: torch.Tensor | None,
    sinks: torch.Tensor | None,
) -> None:
    """One new token per request attends to the request's cached keys (SGLang's decode attention).

    When `key`/`value` are given they are first stored at `loc`: intel_amx leaves writing the
    new token's KV to this kernel. The token then attends to its request's cache slots (see
    `_kv_slots`), only the last `sliding_window_size` of them when that is > 0 (SGLang passes
    the layer's window + 1). `k_scale`/`v_scale` dequantise the cache, as in Triton's
    `decode_attention_fwd`. `attn_logits` is the C++ kernel's split-KV scratch and is not used.
    """
    if key is not None and value is not None:
        slots = loc.long()
        k_buffer[slots] = key.reshape(-1, *k_buffer.shape[1:]).to(k_buffer.dtype)
        v_buffer[slots] = value.reshape(-1, *v_buffer.shape[1:]).to(v_buffer.dtype)
    plain = (
        not is_cross_attention
        and sliding_window_size <= 0
        and sinks is None
        and logit_cap <= 0
        and (encoder_lens is None or not bool(encoder_lens.any()))
    )
    if plain and query.shape[0] > 0:
        output.copy_(
            _batched_decode(
                query, k_buffer, v_buffer, k_scale, v_scale, req_to_token, req_pool_indices, seq_lens, sm_scale
            )
            .to(output.dtype)
            .reshape(output.shape)
        )
        return
    reqs, lens = req_pool_indices.tolist(), seq_lens.tolist()
    encoder = encoder_lens.tolist() if encoder_lens is not None else [0] * len(lens)
    for i, (req, seq_len, encoder_len) in enumerate(zip(reqs, lens, encoder)):
        slots = _kv_slots(req_to_token, req, seq_len, encoder_len, is_cross_attention)
        if sliding_window_size > 0 and not is_cross_attention:
            slots = slots[-sliding_window_size:]
        k = k_buffer[slots].float() * k_scale
        v = v_buffer[slots].float() * v_scale
        out = _attend(query[i : i + 1].float(), k, v, None, sm_scale, logit_cap, sinks)
        output[i] = out[0].to(output.dtype)


def _extend_visibility(
    prefix_len: int,
    extend_len: int,
    is_causal: bool,
    sliding_window_size: int,
    tree_block: torch.Tensor | None,
) -> torch.Tensor | None:
    """Which of a request's prefix_len + extend_len keys each new token sees ([extend, keys])."""
    q_pos = prefix_len + torch.arange(extend_len)[:, None]
    k_pos = torch.arange(prefix_len + extend_len)[None, :]
    if tree_block is not None:
        prefix = torch.ones(extend_len, prefix_len, dtype=torch.bool)
        allowed = torch.cat([prefix, tree_block.bool()], dim=1)
    elif is_causal:
        allowed = k_pos <= q_pos
    elif sliding_window_size > 0:
        allowed = torch.ones(extend_len, prefix_len + extend_len, dtype=torch.bool)
    else:
        return None
    if sliding_window_size > 0:
        allowed &= (q_pos - k_pos).abs() < sliding_window_size
    return allowed


def extend_attention_cpu(
    q_extend: torch.Tensor,
    k_extend: torch.Tensor | None,
    v_extend: torch.Tensor | None,
    o_extend: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    k_scale: float,
    v_scale: float,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    extend_start_loc: torch.Tensor,
    max_len_extend: int,
    sm_scale: float,
    logit_cap: float,
    is_cross_attention: bool,
    sliding_window_size: int,
    encoder_lens: torch.Tensor | None,
    sinks: torch.Tensor | None,
    tree_mask: torch.Tensor | None,
    is_causal: bool,
) -> None:
    """Each request's new tokens attend to its cached prefix and to each other (SGLang's extend
    attention: prefill, draft extend and target verify).

    Request i owns query rows [extend_start_loc[i], + extend_seq_lens[i]) and seq_lens[i] keys:
    a cached prefix, then its new tokens, read from `k_extend`/`v_extend` (unscaled) or from the
    cache when those are None (Gemma-4 KV-shared layers). New token j sits at position
    prefix + j. It sees every key up to itself when `is_causal`, every key otherwise, or, when
    `tree_mask` is given (speculative verify, QLEN_ONLY layout: one [extend, extend] block per
    request), the whole prefix plus the new tokens its block allows; with
    `sliding_window_size` W > 0 (the layer's window + 1) only keys less than W positions away.
    Cross-attention sees the request's encoder slots instead, unmasked. Mirrors Triton's
    `extend_attention_fwd`, k_scale/v_scale included; `max_len_extend` only sizes C++ tiles.
    """
    reqs, lens = req_pool_indices.tolist(), seq_lens.tolist()
    extend_lens, starts = extend_seq_lens.tolist(), extend_start_loc.tolist()
    encoder = encoder_lens.tolist() if encoder_lens is not None else [0] * len(lens)
    mask_start = 0
    for req, seq_len, n, start, encoder_len in zip(reqs, lens, extend_lens, starts, encoder):
        rows = slice(start, start + n)
        slots = _kv_slots(req_to_token, req, seq_len, encoder_len, is_cross_attention)
        k = k_buffer[slots].float() * k_scale
        v = v_buffer[slots].float() * v_scale
        allowed = None
        if not is_cross_attention:
            prefix_len = seq_len - n
            if k_extend is not None and v_extend is not None:
                k = torch.cat([k[:prefix_len], k_extend[rows].float()])
                v = torch.cat([v[:prefix_len], v_extend[rows].float()])
            tree_block = None
            if tree_mask is not None:
                tree_block = tree_mask[mask_start : mask_start + n * n].view(n, n)
                mask_start += n * n
            allowed = _extend_visibility(prefix_len, n, is_causal, sliding_window_size, tree_block)
        out = _attend(q_extend[rows].float(), k, v, allowed, sm_scale, logit_cap, sinks)
        o_extend[rows] = out.to(o_extend.dtype)


def build_draft_decode_metadata_cpu(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    topk: int,
    num_steps: int,
    pool_len: int,
) -> torch.Tensor:
    """req_to_token rows for multi-step draft decode, one per (request, candidate).

    Row b * topk + t holds request b's committed prefix (seq_lens[b] slots) followed by the
    num_steps draft slots candidate t got from `assign_draft_cache_locs_contiguous`, at
    seq_lens[b] + t * num_steps. Entries after those are unspecified (the C++ kernel leaves
    them uninitialised). Same layout as Triton's `generate_draft_decode_kv_indices` at the last
    draft step.
    """
    rows = req_to_token[req_pool_indices.long(), :pool_len].repeat_interleave(topk, dim=0)
    prefix_len = seq_lens.long().repeat_interleave(topk)[:, None]
    candidate = torch.arange(topk).repeat(seq_lens.numel())[:, None]
    step = torch.arange(num_steps)[None, :]
    draft = rows.gather(1, prefix_len + candidate * num_steps + step)
    rows.scatter_(1, prefix_len + step, draft)
    return rows


def assign_draft_cache_locs_contiguous_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    seq_lens: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
    topk: int,
    num_steps: int,
) -> None:
    """Read back the draft KV slots the allocator reserved: request i's topk * num_steps
    req_to_token entries from seq_lens[i] on, concatenated into `out_cache_loc`; mirrors
    Triton's `assign_draft_cache_locs_contiguous`."""
    columns = seq_lens.long()[:, None] + torch.arange(topk * num_steps)
    table = req_to_token[:, :pool_len]
    out_cache_loc.copy_(table[req_pool_indices.long()[:, None], columns].flatten())


def _ragged_cells(
    req_pool_indices: torch.Tensor, start_offset: torch.Tensor, end_offset: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of the req_to_token cells [start_offset[i], end_offset[i]) of every
    request i, concatenated in request order."""
    lens = (end_offset - start_offset).long()
    first = torch.cumsum(lens, 0) - lens
    rows = req_pool_indices.long().repeat_interleave(lens)
    within = torch.arange(int(lens.sum())) - first.repeat_interleave(lens)
    return rows, start_offset.long().repeat_interleave(lens) + within


def assign_extend_cache_locs_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Gather each request's KV slots [start_offset, end_offset) out of req_to_token into the
    front of `out_cache_loc`; mirrors Triton's `assign_extend_cache_locs`."""
    rows, columns = _ragged_cells(req_pool_indices, start_offset, end_offset)
    out_cache_loc[: columns.numel()] = req_to_token[:, :pool_len][rows, columns]


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Scatter freshly allocated KV slots into req_to_token: the inverse of
    `assign_extend_cache_locs_cpu`; mirrors Triton's `assign_req_to_token_pool`."""
    rows, columns = _ragged_cells(req_pool_indices, start_offset, end_offset)
    table = req_to_token[:, :pool_len]
    table[rows, columns] = out_cache_loc[: columns.numel()].to(req_to_token.dtype)


def fill_bonus_tokens_cpu(
    accept_tokens: torch.Tensor,
    accept_lens: torch.Tensor,
    bonus_tokens: torch.Tensor,
    accept_stride: int,
) -> None:
    """bonus_tokens[i] = the last accepted token of request i, i.e. accept_tokens viewed as
    rows of `accept_stride` at column accept_lens[i] - 1; mirrors Triton's `fill_bonus_tokens`."""
    last = torch.arange(accept_lens.numel()) * accept_stride + accept_lens.long() - 1
    bonus_tokens.copy_(accept_tokens.reshape(-1)[last])


def fill_accept_out_cache_loc_cpu(
    accept_index: torch.Tensor,
    out_cache_loc: torch.Tensor,
    accept_out_cache_loc: torch.Tensor,
) -> None:
    """Pack the KV slots of accepted draft tokens: out_cache_loc at every accept_index entry
    that is not -1 (rejected), in order, into the front of `accept_out_cache_loc`; mirrors
    Triton's `fill_accept_out_cache_loc`."""
    flat = accept_index.reshape(-1).long()
    kept = flat[flat > -1]
    accept_out_cache_loc[: kept.numel()] = out_cache_loc[kept]


def _tree_parents(parent_list: torch.Tensor, selected_index: torch.Tensor, topk: int) -> torch.Tensor:
    """Parent node of every draft-tree node, [bs, 1 + num_selected]: node 0 is the root
    (parent -1), node i > 0 is selected_index[:, i - 1]. A node whose parent was not
    selected also gets -1."""
    selected = selected_index.long()
    parent_slot = selected // topk  # 0: a child of the root
    if parent_list.shape[1]:
        parent_token = parent_list.long().gather(1, parent_slot)
    else:  # one draft step: every node hangs off the root
        parent_token = torch.full_like(selected, -1)
    match = selected[:, None, :] == parent_token[:, :, None]  # [bs, node, candidate parent]
    parent = torch.where(match.any(-1), match.int().argmax(-1) + 1, -1)
    parent = torch.where(parent_slot == 0, 0, parent)
    root = torch.full((selected.shape[0], 1), -1, dtype=torch.long)
    return torch.cat([root, parent], dim=1)


def build_tree_kernel_efficient_cpu(
    parent_list: torch.Tensor,
    selected_index: torch.Tensor,
    verified_seq_len: torch.Tensor,
    tree_mask: torch.Tensor,
    positions: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    topk: int,
    depth: int,
    draft_token_num: int,
    tree_mask_mode: int,
) -> None:
    """Turn EAGLE's top-k draft selection into the token tree that target verify checks.

    Node 0 is the bonus (root) token; node i > 0 is draft candidate selected_index[:, i - 1],
    whose parent holds token parent_list[b, selected_index[:, i - 1] // topk] (the root when
    that quotient is 0). Writes retrive_index (flat node ids), retrive_next_token (first
    child), retrive_next_sibling (next child of the same parent; children in node order,
    -1 = none), positions (seq_len + depth of the node) and the tree attention mask: a node sees
    the root, itself and its ancestors, in FULL_MASK layout (mode 0: rows of seq_len + n whose
    prefix columns the caller pre-filled) or QLEN_ONLY (mode 1: [bs, n, n]). A node whose
    parent was not selected stays unlinked and its walk stops there, as on CUDA. Mirrors
    `build_tree_kernel_efficient` (CUDA/Triton); mode 2 (bit-packed) has no CPU consumer.
    """
    if tree_mask_mode not in (0, 1):
        raise ValueError(f"tree_mask_mode {tree_mask_mode}: only FULL_MASK and QLEN_ONLY")
    bs, n = verified_seq_len.numel(), draft_token_num
    parent = _tree_parents(parent_list, selected_index, topk)
    node = torch.arange(n)
    linked = parent >= 0

    is_child = linked[:, None, :] & (parent[:, None, :] == node[:, None])  # [bs, p, c]
    first_child = torch.where(is_child, node, n).amin(-1)
    same_parent = parent[:, :, None] == parent[:, None, :]  # [bs, i, j]
    is_next = linked[:, :, None] & linked[:, None, :] & same_parent & (node > node[:, None])
    next_sibling = torch.where(is_next, node, n).amin(-1)
    retrive_index.copy_(torch.arange(bs * n).view(bs, n))
    retrive_next_token.copy_(torch.where(first_child < n, first_child, -1))
    retrive_next_sibling.copy_(torch.where(next_sibling < n, next_sibling, -1))

    allowed = torch.zeros(bs, n, n, dtype=torch.bool)
    allowed[:, :, 0] = True
    walker = node.expand(bs, n)
    tree_depth = torch.zeros(bs, n, dtype=torch.long)
    for _ in range(depth):
        active = walker > 0
        allowed |= active[:, :, None] & (node == walker[:, :, None])
        tree_depth += active
        walker = torch.where(active, parent.gather(1, walker.clamp(min=0)), 0)
    seq_lens = verified_seq_len.long()
    positions.view(bs, n).copy_(seq_lens[:, None] + tree_depth)

    if tree_mask_mode == 1:
        tree_mask[: bs * n * n].copy_(allowed.flatten())
        return
    request_start = torch.cumsum(seq_lens * n, 0) - seq_lens * n + torch.arange(bs) * n * n
    row_start = request_start[:, None] + (seq_lens[:, None] + n) * node + seq_lens[:, None]
    cells = row_start[:, :, None] + node
    tree_mask[cells.flatten()] = allowed.flatten().to(tree_mask.dtype)


def verify_tree_greedy_cpu(
    predicts: torch.Tensor,
    accept_index: torch.Tensor,
    accept_token_num: torch.Tensor,
    candidates: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    target_predict: torch.Tensor,
) -> None:
    """Greedy verification of each request's draft tree against the target model's argmax.

    From the root, repeatedly move to the first child (in sibling order) whose draft token
    equals the target's prediction at the last accepted node, until none does or
    accept_index's row is full. Writes accept_index[b, : 1 + m] (flat ids of the root and the
    m accepted nodes), accept_token_num[b] = m, and predicts[id] = target token for every
    accepted node and for the bonus after the last one. Mirrors `verify_tree_greedy`
    (CUDA/Triton). The walk is sequential and touches at most a few dozen nodes, so it runs on
    plain lists.
    """
    max_accept = accept_index.shape[1]
    tokens, ids = candidates.tolist(), retrive_index.tolist()
    first_child, next_sibling = retrive_next_token.tolist(), retrive_next_sibling.tolist()
    target = target_predict.reshape(-1).tolist()
    verified: list[int] = []
    for b in range(len(tokens)):
        path = [ids[b][0]]
        node = 0
        while len(path) < max_accept:
            node = first_child[b][node]
            while node != -1 and tokens[b][node] != target[path[-1]]:
                node = next_sibling[b][node]
            if node == -1:
                break
            path.append(ids[b][node])
        accept_index[b, : len(path)] = torch.tensor(path)
        accept_token_num[b] = len(path) - 1
        verified += path
    verified_ids = torch.tensor(verified, dtype=torch.long)
    predicts[verified_ids] = target_predict.reshape(-1)[verified_ids].to(predicts.dtype)
