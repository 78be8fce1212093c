"""Torch-native versions of the `sgl_kernel` CPU ops that SGLang's CPU speculative path calls.

PyPI's sgl-kernel ships CUDA code only, so a machine without a GPU has none of the `*_cpu`
ops that SGLang's intel_amx attention backend and its speculative helpers call. Each function
here stands in for one of them: same name, argument names and order, and in-place outputs as
SGLang 0.5.23's call sites, and the semantics of the Triton (or CUDA) kernel SGLang runs for the
same step on a GPU. `install.py` makes them reachable where SGLang looks.

Index tensors may be int32 or int64. Attention accumulates in fp32 whatever the input dtype.
"""

import ctypes
from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Plan:
    """Where every layer of one forward pass reads its keys, built once and reused.

    The keys are the cache rows `cache_slots`, followed, when the new tokens' K/V are passed
    separately, by those rows; `key_rows` orders that concatenation so request b's keys sit at
    rows [b * keys, (b + 1) * keys) (None: it is already in that order). Queries of request b sit
    at rows [b * queries, (b + 1) * queries); `query_rows` picks them out of the ragged input,
    and the plan rows `kept` (the queries that exist) go back to input rows `out_rows` (all
    three None: the plan's rows are the input's).
    `mask` [B, 1, group * queries, keys] (0 / -inf, added to the scores) hides keys (None: all
    visible); `hidden_rows` says whether some existing query sees no key at all (its output
    must be 0, not SDPA's NaN).
    """

    batch: int
    queries: int
    keys: int
    group: int
    cache_slots: torch.Tensor
    key_rows: torch.Tensor | None
    query_rows: torch.Tensor | None
    kept: torch.Tensor | None
    out_rows: torch.Tensor | None
    mask: torch.Tensor | None
    hidden_rows: bool


class _PlanCache:
    """The last plan, keyed on the very tensor objects (and their in-place version counters)
    it was built from: SGLang passes the same metadata to every layer of a forward pass, so the
    index arithmetic runs once per pass instead of once per layer. Holding the key tensors keeps
    their memory from being reused by a different tensor while the plan is cached."""

    def __init__(self) -> None:
        self._key: tuple = ()
        self._versions: tuple[int, ...] = ()
        self._plan: _Plan | None = None

    def get(self, tensors: tuple[torch.Tensor | None, ...], params: tuple) -> _Plan | None:
        if self._plan is None or len(tensors) + len(params) != len(self._key):
            return None
        same = all(a is b for a, b in zip(tensors, self._key)) and params == self._key[len(tensors) :]
        if not same or self._versions != tuple(t._version for t in tensors if t is not None):
            return None
        return self._plan

    def put(self, tensors: tuple[torch.Tensor | None, ...], params: tuple, plan: _Plan) -> _Plan:
        self._key = (*tensors, *params)
        self._versions = tuple(t._version for t in tensors if t is not None)
        self._plan = plan
        return plan


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """A boolean visibility mask as the fp32 0 / -inf mask SDPA would otherwise rebuild per call."""
    return torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))


_DECODE_PLANS = _PlanCache()
_EXTEND_PLANS = _PlanCache()


def _fused_path(
    is_cross: bool,
    sliding_window_size: int,
    sinks: torch.Tensor | None,
    logit_cap: float,
    encoder_lens: torch.Tensor | None,
) -> bool:
    """Whether a call takes the plan + SDPA path: no window, cap, sinks, encoder or cross-attention."""
    return (
        not is_cross
        and sliding_window_size <= 0
        and sinks is None
        and logit_cap <= 0
        and (encoder_lens is None or not bool(encoder_lens.any()))
    )


def _decode_plan(
    req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor, group: int
) -> _Plan:
    """One query per request over its first seq_len cache slots."""
    tensors, params = (req_to_token, req_pool_indices, seq_lens), (group,)
    plan = _DECODE_PLANS.get(tensors, params)
    if plan is not None:
        return plan
    lens = seq_lens.long()
    batch, keys = lens.numel(), int(lens.max())
    visible = torch.arange(keys)[None, :] < lens[:, None]  # (B, keys)
    slots = req_to_token[req_pool_indices.long(), :keys].long().masked_fill(~visible, 0)
    mask = None
    if not bool(visible.all()):
        mask = _additive(visible[:, None, None, :].expand(batch, 1, group, keys))
    plan = _Plan(batch, 1, keys, group, slots.flatten(), None, None, None, None, mask, bool((lens == 0).any()))
    return _DECODE_PLANS.put(tensors, params, plan)


def _extend_plan(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    extend_start_loc: torch.Tensor,
    tree_mask: torch.Tensor | None,
    is_causal: bool,
    new_kv_given: bool,
    group: int,
    rows: int,
) -> _Plan:
    """Each request's new tokens over its prefix and each other: causal, all visible, or by its
    QLEN_ONLY tree block (verify). With `new_kv_given` the new tokens' keys come from the
    extend rows, else from the cache."""
    tensors = (req_to_token, req_pool_indices, seq_lens, extend_seq_lens, extend_start_loc, tree_mask)
    params = (is_causal, new_kv_given, group, rows)
    plan = _EXTEND_PLANS.get(tensors, params)
    if plan is not None:
        return plan
    lens, n = seq_lens.long(), extend_seq_lens.long()
    starts, prefix = extend_start_loc.long(), lens - n
    batch, queries, keys = lens.numel(), int(n.max()), int(lens.max())
    k_pos = torch.arange(keys)[None, :]
    q_pos = torch.arange(queries)[None, :]
    in_seq = k_pos < lens[:, None]  # (B, keys)
    table = req_to_token[req_pool_indices.long(), :keys].long()
    dense = batch == 1 and int(starts[0]) == 0 and int(n[0]) == rows  # the input rows are the plan's
    key_rows = None
    if new_kv_given:  # cached prefixes, request after request, then the new tokens' rows
        cached = k_pos < prefix[:, None]
        cache_slots = table[cached]
        first = torch.cumsum(prefix, 0) - prefix
        new_row = cache_slots.numel() + starts[:, None] + k_pos - prefix[:, None]
        key_rows = torch.where(cached, first[:, None] + k_pos, new_row).masked_fill(~in_seq, 0).flatten()
        if dense:
            key_rows = None  # prefix then every new row: already in order
    else:
        cache_slots = table.masked_fill(~in_seq, 0).flatten()
    # allowed (B, queries, keys): query j of request b sits at position prefix[b] + j
    allowed = in_seq[:, None, :].expand(batch, queries, keys)
    if tree_mask is not None:
        if bool((n == queries).all()):  # verify: every request drafts the same number of nodes
            block = tree_mask[: batch * queries * queries].view(batch, queries, queries).bool()
        else:
            block = torch.zeros(batch, queries, queries, dtype=torch.bool)
            sizes = n.tolist()
            cells = tree_mask[: sum(m * m for m in sizes)].split([m * m for m in sizes])
            for b, m in enumerate(sizes):  # once per forward pass, not per layer
                block[b, :m, :m] = cells[b].view(m, m).bool()
        rel = k_pos[:, None, :] - prefix[:, None, None]  # key position relative to the first new token
        in_block = rel.clamp(0, queries - 1).expand(batch, queries, keys)
        tree_ok = block.gather(2, in_block)
        allowed = allowed & ((rel < 0) | tree_ok)
    elif is_causal:
        allowed = allowed & (k_pos[:, None, :] <= prefix[:, None, None] + q_pos[:, :, None])
    valid = q_pos < n[:, None]  # (B, queries)
    query_rows = (starts[:, None] + q_pos).masked_fill(~valid, 0).flatten()
    kept = valid.flatten().nonzero().flatten()
    mask = None
    if not bool(allowed[valid].all()):
        mask = _additive(allowed[:, None].expand(batch, group, queries, keys).reshape(batch, 1, group * queries, keys))
    hidden_rows = not bool(allowed.any(-1)[valid].all())
    plan = _Plan(
        batch,
        queries,
        keys,
        group,
        cache_slots,
        key_rows,
        None if dense else query_rows,
        None if dense else kept,
        None if dense else query_rows[kept],
        mask,
        hidden_rows,
    )
    return _EXTEND_PLANS.put(tensors, params, plan)


def _attend_plan(
    plan: _Plan,
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    k_scale: float,
    v_scale: float,
    k_new: torch.Tensor | None,
    v_new: torch.Tensor | None,
    sm_scale: float,
) -> torch.Tensor:
    """Attention of the plan's queries (q [rows, Hq, D], in plan order) in fp32 with one fused
    SDPA call: a kv head's query group (and a request's queries) play SDPA's query positions,
    so no score tensor is built and no key is repeated per query head. Returns
    [B * queries, Hq, Dv] (rows of missing queries hold garbage)."""
    b, lq, lk, group = plan.batch, plan.queries, plan.keys, plan.group
    hkv, d, dv = k_buffer.shape[1], q.shape[-1], v_buffer.shape[-1]

    def keys_of(buffer: torch.Tensor, scale: float, new: torch.Tensor | None) -> torch.Tensor:
        out = buffer.index_select(0, plan.cache_slots).float()
        if scale != 1.0:
            out = out * scale
        if new is not None:
            out = torch.cat([out, new.float()])
        if plan.key_rows is not None:
            out = out.index_select(0, plan.key_rows)
        return out.view(b, lk, hkv, -1).transpose(1, 2)

    k, v = keys_of(k_buffer, k_scale, k_new), keys_of(v_buffer, v_scale, v_new)
    q = q.float().view(b, lq, hkv, group, d).permute(0, 2, 3, 1, 4).reshape(b, hkv, group * lq, d)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, scale=sm_scale)
    if plan.hidden_rows:
        out = out.nan_to_num(0.0)  # a query with every key hidden gets 0
    return out.view(b, hkv, group, lq, dv).permute(0, 3, 1, 2, 4).reshape(b * lq, hkv * group, dv)


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
    The plain case (no window, cap, sinks or encoder) runs all requests in one SDPA call over a
    gather plan shared by every layer; the rest take a per-request loop.
    """
    if key is not None and value is not None:
        slots = loc.long()
        k_buffer[slots] = key.reshape(-1, *k_buffer.shape[1:]).to(k_buffer.dtype)
        v_buffer[slots] = value.reshape(-1, *v_buffer.shape[1:]).to(v_buffer.dtype)
    if query.shape[0] == 0:
        return
    if _fused_path(is_cross_attention, sliding_window_size, sinks, logit_cap, encoder_lens):
        plan = _decode_plan(req_to_token, req_pool_indices, seq_lens, query.shape[1] // k_buffer.shape[1])
        out = _attend_plan(plan, query, k_buffer, v_buffer, k_scale, v_scale, None, None, sm_scale)
        output.copy_(out.view(output.shape))
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
    The plain case (no window, cap, sinks, encoder or cross-attention) runs every request in one
    SDPA call over a gather plan shared by every layer; the rest take a per-request loop.
    """
    if q_extend.shape[0] == 0:
        return
    if _fused_path(is_cross_attention, sliding_window_size, sinks, logit_cap, encoder_lens):
        new_kv = k_extend is not None and v_extend is not None
        group = q_extend.shape[1] // k_buffer.shape[1]
        plan = _extend_plan(
            req_to_token,
            req_pool_indices,
            seq_lens,
            extend_seq_lens,
            extend_start_loc,
            tree_mask,
            is_causal,
            new_kv,
            group,
            q_extend.shape[0],
        )
        q = q_extend if plan.query_rows is None else q_extend.index_select(0, plan.query_rows)
        k_new, v_new = (k_extend, v_extend) if new_kv else (None, None)
        out = _attend_plan(plan, q, k_buffer, v_buffer, k_scale, v_scale, k_new, v_new, sm_scale)
        if plan.query_rows is None:
            o_extend.copy_(out.view(o_extend.shape))
        else:
            o_extend.index_copy_(0, plan.out_rows, out.index_select(0, plan.kept).to(o_extend.dtype))
        return
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
