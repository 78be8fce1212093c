"""EASD in SGLang's EAGLE V2 loop: draft statistics ride from drafting to verify.

A depth-S chain's proposals come from two places: d_1 from the previous round's draft extend
(or the prefill's), d_2..d_S from `draft_forward`. `EASDDraftWorker` wraps the draft runner's
forward once to keep the logits of those forwards as they happen (no second pass), turns them
into entropy and top-n target ids, keeps d_1's per request slot between rounds, and hangs
the stacked [B, S] statistics on the verify input. The `eagle_sample` hook then applies the
rule to the target's verify logits before SGLang verifies. The same statistics feed the
opt-in entropy trace (`serving/entropy_trace.py`) and the entropy stop (`entropy_stop.py`),
which skips a draft forward once every request has stopped, cuts the round's chain (verify and
draft extend) to the deepest request's stop, and masks the dropped proposals of requests that
stopped earlier in the acceptance test. None of this exists unless $SGLANG_EDSD_EASD, $SGLANG_EDSD_TRACE or
$SGLANG_EDSD_ENTROPY_STOP is set: the default worker is SGLang's own, untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from sglang.srt.speculative.eagle_worker_v2 import EagleDraftWorker, EAGLEWorkerV2

from sglang_edsd.easd.rule import EASDConfig, EASDConfigError, entropy_and_top, mask_rejected
from sglang_edsd.entropy_stop import EntropyStop, all_stopped, kept_steps, mask_dropped
from sglang_edsd.serving.entropy_trace import EntropyTrace

SAMPLE_TARGET = "sglang.srt.speculative.eagle_worker_common.eagle_sample"


class EASDDraftWorker(EagleDraftWorker):
    """EagleDraftWorker that records entropy and top-n of each draft distribution it samples from."""

    easd: EASDConfig | None
    easd_trace: EntropyTrace | None
    entropy_stop: EntropyStop | None

    def easd_setup(self, cfg: EASDConfig | None, trace: EntropyTrace | None, stop: EntropyStop | None) -> None:
        if self.topk != 1:
            raise EASDConfigError(
                "EASD, the entropy trace and the entropy stop support chain drafting only (--speculative-eagle-topk 1)"
            )
        self.easd, self.easd_trace, self.entropy_stop = cfg, trace, stop
        # During a draft with the stop on: entropies [B] of d_1.. so far; None otherwise.
        self.stop_entropy: list[torch.Tensor] | None = None
        if stop is not None:
            check_chain_internals(self)
        # The round's configured depth while a stop has cut its chain (restored by end_round).
        self.full_depth: int | None = None
        self.chain_buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.easd_top_n = cfg.top_n if cfg is not None else 1  # the trace needs entropies only
        self.easd_first_entropy: torch.Tensor | None = None
        self.easd_first_top: torch.Tensor | None = None
        # Every draft forward's logits output, in order, since the last draft or extend began.
        self.easd_outputs: list[Any] = []
        forward = self.draft_runner.forward

        def recording_forward(*args: Any, **kwargs: Any) -> Any:
            stop, so_far = self.entropy_stop, self.stop_entropy
            if stop is not None and so_far is not None and all_stopped(torch.stack(so_far, 1), stop.threshold):
                return self._skipped_output(so_far[0].shape[0])
            out = forward(*args, **kwargs)
            self.easd_outputs.append(out.logits_output)
            if so_far is not None:
                so_far.append(entropy_and_top(out.logits_output.next_token_logits, 1)[0])
            return out

        self.draft_runner.forward = recording_forward

    def draft_forward(self, forward_batch: Any) -> Any:
        """SGLang's chain draft, cut to the deepest kept proposal when every request stopped earlier.

        The cut round verifies and draft-extends kept + 1 rows per request instead of S + 1:
        rows are most of a round's cost on CPU, and a shorter chain is as lossless as any."""
        out = super().draft_forward(forward_batch)
        so_far = self.stop_entropy
        if self.entropy_stop is None or so_far is None or forward_batch.forward_mode.is_idle():
            return out
        depth = int(kept_steps(torch.stack(so_far, 1), self.entropy_stop.threshold).max())  # eager: host sync
        if depth >= self.speculative_num_steps:
            return out
        _, _, draft_tokens, draft_probs = out
        self.full_depth = self.speculative_num_steps
        self._use_depth(depth)
        bs = draft_tokens.shape[0]
        return (
            self._topk1_parents_prealloc[:bs],
            self._topk1_score_indices_prealloc[:bs],
            draft_tokens[:, :depth].contiguous(),
            None if draft_probs is None else draft_probs[:, :depth].contiguous(),
        )

    def end_round(self) -> None:
        """Back to the configured depth after a round the stop cut."""
        if self.full_depth is not None:
            self._use_depth(self.full_depth)
            self.full_depth = None

    def _use_depth(self, steps: int) -> None:
        """Chain depth `steps` for the rest of the round: SGLang's own topk-1 chain buffers for it."""
        self.speculative_num_steps, self.speculative_num_draft_tokens = steps, steps + 1
        if steps not in self.chain_buffers:
            self._rebuild_topk1_chain_buffers()
            self.chain_buffers[steps] = (self._topk1_parents_prealloc, self._topk1_score_indices_prealloc)
        self._topk1_parents_prealloc, self._topk1_score_indices_prealloc = self.chain_buffers[steps]

    def _skipped_output(self, batch_size: int) -> Any:
        """What `draft_forward` reads of a draft forward (logits, hidden states), as zeros: every
        request has stopped, so the proposal it yields is masked and its KV slot never read."""
        last = self.easd_outputs[-1] if self.easd_outputs else self.easd_last_extend
        logits = last.next_token_logits.new_zeros(batch_size, last.next_token_logits.shape[-1])
        hidden = last.hidden_states.new_zeros(batch_size, last.hidden_states.shape[-1])
        return SimpleNamespace(logits_output=SimpleNamespace(next_token_logits=logits, hidden_states=hidden))

    def _stats(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entropy over the draft vocabulary and top-n ids mapped to target ids."""
        entropy, top = entropy_and_top(logits, self.easd_top_n)
        if self.hot_token_id is not None:
            top = self.hot_token_id[top]
        return entropy, top.long()

    def _keep_first(self, req_pool_indices: torch.Tensor, logits: torch.Tensor) -> None:
        """Store d_1's statistics by request-pool slot, from a draft extend to the next draft."""
        if self.easd_first_entropy is None:  # the pool exists only once the scheduler allocated it
            slots = self.req_to_token_pool.req_to_token.shape[0]
            self.easd_first_entropy = torch.zeros(slots, dtype=torch.float32, device=self.device)
            self.easd_first_top = torch.zeros(slots, self.easd_top_n, dtype=torch.int64, device=self.device)
        entropy, top = self._stats(logits)
        self.easd_first_entropy[req_pool_indices] = entropy
        self.easd_first_top[req_pool_indices] = top

    def _draft_extend_for_prefill(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        self.easd_outputs = []
        out = super()._draft_extend_for_prefill(batch, *args, **kwargs)
        self.easd_last_extend = self.easd_outputs[-1]
        self._keep_first(batch.req_pool_indices, self.easd_outputs[-1].next_token_logits)
        return out

    def _draft_extend_for_decode(self, batch: Any, batch_result: Any, **kwargs: Any) -> Any:
        self.easd_outputs = []
        out = super()._draft_extend_for_decode(batch, batch_result, **kwargs)
        # SGLang has replaced next_token_logits by the rows of each request's last accepted token.
        self.easd_last_extend = self.easd_outputs[-1]
        self._keep_first(batch.req_pool_indices, self.easd_outputs[-1].next_token_logits)
        return out

    def draft(self, batch: Any, *, with_topology: bool = False) -> Any:
        self.easd_outputs = []  # filled by the chain steps of draft_forward
        idle = batch.forward_mode.is_idle()
        if not idle and self.easd_first_entropy is None:
            raise RuntimeError("EASD: a draft ran before any draft extend recorded d_1's distribution")
        idx = batch.req_pool_indices
        if self.entropy_stop is not None and not idle:
            self.stop_entropy = [self.easd_first_entropy[idx]]
        try:
            out = super().draft(batch, with_topology=with_topology)
        finally:
            self.stop_entropy = None
        verify_input = out[0] if with_topology else out
        if idle:
            return out
        entropies, tops = [self.easd_first_entropy[idx]], [self.easd_first_top[idx]]
        for output in self.easd_outputs[: self.speculative_num_steps - 1]:
            entropy, top = self._stats(output.next_token_logits)
            entropies.append(entropy)
            tops.append(top)
        skipped = self.speculative_num_steps - len(entropies)
        if skipped and self.entropy_stop is None:
            raise RuntimeError(f"EASD saw {len(entropies)} draft distributions for {self.speculative_num_steps} steps")
        for _ in range(skipped):  # steps skipped by the stop: proposals that are masked anyway
            entropies.append(torch.full_like(entropies[0], float("inf")))
            tops.append(torch.zeros_like(tops[0]))
        verify_input.easd_draft_entropy = torch.stack(entropies, dim=1)
        verify_input.easd_draft_top = torch.stack(tops, dim=1)
        verify_input.easd_config = self.easd
        verify_input.easd_trace = self.easd_trace
        if self.entropy_stop is not None:
            verify_input.edsd_stop_keep = kept_steps(verify_input.easd_draft_entropy, self.entropy_stop.threshold)
        return out


CHAIN_INTERNALS = (
    "_rebuild_topk1_chain_buffers",
    "_topk1_parents_prealloc",
    "_topk1_score_indices_prealloc",
    "speculative_num_steps",
    "speculative_num_draft_tokens",
)


def check_chain_internals(draft_worker: Any) -> None:
    """The stop's chain cut sets these SGLang draft-worker internals for a round: fail at start-up,
    naming them, if an SGLang upgrade renamed any."""
    missing = [name for name in CHAIN_INTERNALS if not hasattr(draft_worker, name)]
    if missing:
        raise RuntimeError(
            f"the entropy stop's chain cut needs SGLang's EagleDraftWorker.{', .'.join(missing)}, which this "
            "SGLang lacks: update sglang_edsd/easd/worker.py for it"
        )


def check_draft_runs_eagerly(device: str) -> None:
    """EASD and the trace read every draft forward in Python, which a CUDA-graph replay skips.

    SGLang's draft worker captures its decode and draft-extend graphs unless the DECODE phase's
    graph backend is disabled (`EagleDraftWorker._capture_cuda_graphs`), whichever flag said so:
    --cuda-graph-backend-decode=disabled, --cuda-graph-config, or the deprecated
    --disable-cuda-graph (the legacy `disable_cuda_graph` field is set by that one only).
    """
    from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, check_cuda_graph_backend

    if device != "cpu" and not check_cuda_graph_backend(Phase.DECODE, Backend.DISABLED):
        raise EASDConfigError(
            "EASD and the entropy trace read every draft forward in Python: serve with "
            "--cuda-graph-backend-decode=disabled (or the deprecated --disable-cuda-graph)"
        )


class EASDWorkerV2(EAGLEWorkerV2):
    """SGLang's EAGLE V2 worker with an `EASDDraftWorker` for drafting (EASD rule, trace, stop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg, trace = EASDConfig.from_env(), EntropyTrace.from_env()
        stop = EntropyStop.from_env(_draft_folder(self.server_args))
        if cfg is None and trace is None and stop is None:
            raise EASDConfigError(
                "EASDWorkerV2 built without $SGLANG_EDSD_EASD, $SGLANG_EDSD_TRACE or $SGLANG_EDSD_ENTROPY_STOP"
            )
        check_draft_runs_eagerly(str(self.device))
        if self._draft_worker is not None:
            self._draft_worker.__class__ = EASDDraftWorker
            self._draft_worker.easd_setup(cfg, trace, stop)

    def forward_batch_generation(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().forward_batch_generation(batch, *args, **kwargs)
        finally:
            if self._draft_worker is not None:
                self._draft_worker.end_round()

    def verify(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        """SGLang's verify at the width of this round's verify input (narrower once the stop cut it)."""
        full, width = self.speculative_num_draft_tokens, batch.spec_info.draft_token_num
        self.speculative_num_draft_tokens = width
        try:
            return super().verify(batch, *args, **kwargs)
        finally:
            self.speculative_num_draft_tokens = full


def _draft_folder(server_args: Any) -> Path | None:
    """The local draft folder (hub ids resolved as SGLang resolves them), for the stop's sidecar."""
    from sglang_edsd.serving.model_sources import local_draft_folder

    path = server_args.speculative_draft_model_path
    if not path:
        return None
    return Path(local_draft_folder(path, server_args.speculative_draft_model_revision, server_args.download_dir))


def easd_sample(
    original: Callable[..., Any], verify_input: Any, batch: Any, logits_output: Any, *args: Any, **kwargs: Any
) -> Any:
    """AROUND hook on eagle_sample: trace and/or apply the rule to verify inputs that carry draft statistics."""
    draft_entropy = getattr(verify_input, "easd_draft_entropy", None)
    if draft_entropy is None or batch.forward_mode.is_idle():
        return original(verify_input, batch, logits_output, *args, **kwargs)
    cfg, trace = verify_input.easd_config, verify_input.easd_trace
    keep = getattr(verify_input, "edsd_stop_keep", None)
    logits = logits_output.next_token_logits
    if trace is not None:  # before the rule edits the logits
        bsz, steps = draft_entropy.shape
        target_entropy, _ = entropy_and_top(logits.view(bsz, steps + 1, -1)[:, :steps], 1)
    if cfg is not None:
        mask_rejected(cfg, logits, verify_input.draft_token, draft_entropy, verify_input.easd_draft_top)
    tokens = verify_input.draft_token
    if keep is not None and batch.sampling_info.is_all_greedy:  # sampled verify indexes by token id
        verify_input.draft_token = mask_dropped(tokens, keep)
    try:
        out = original(verify_input, batch, logits_output, *args, **kwargs)
    finally:
        verify_input.draft_token = tokens
    if trace is not None:
        # eagle_sample's second output counts the tokens each verify emits: accepted drafts + the bonus.
        trace.write(batch.reqs, draft_entropy, target_entropy, out[1] - 1)
    return out


def register_hooks() -> None:
    """Hook eagle_sample (the plugin calls this only when EASD, the trace or the entropy stop is on)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(SAMPLE_TARGET, easd_sample, HookType.AROUND)
