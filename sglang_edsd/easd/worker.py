"""EASD in SGLang's EAGLE V2 loop: draft statistics ride from drafting to verify.

A depth-S chain's proposals come from two places: d_1 from the previous round's draft extend
(or the prefill's), d_2..d_S from `draft_forward`. `EASDDraftWorker` wraps the draft runner's
forward once to keep the logits of those forwards as they happen (no second pass), turns them
into entropy and top-n target ids, keeps d_1's per request slot between rounds, and hangs
the stacked [B, S] statistics on the verify input. The `eagle_sample` hook then applies the
rule to the target's verify logits before SGLang verifies. The same statistics feed the
opt-in entropy trace (`serving/entropy_trace.py`). None of this exists unless
$SGLANG_EDSD_EASD or $SGLANG_EDSD_TRACE is set: the default worker is SGLang's own, untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from sglang.srt.speculative.eagle_worker_v2 import EagleDraftWorker, EAGLEWorkerV2

from sglang_edsd.easd.rule import EASDConfig, EASDConfigError, entropy_and_top, mask_rejected
from sglang_edsd.serving.entropy_trace import EntropyTrace

SAMPLE_TARGET = "sglang.srt.speculative.eagle_worker_common.eagle_sample"


class EASDDraftWorker(EagleDraftWorker):
    """EagleDraftWorker that records entropy and top-n of each draft distribution it samples from."""

    easd: EASDConfig | None
    easd_trace: EntropyTrace | None

    def easd_setup(self, cfg: EASDConfig | None, trace: EntropyTrace | None) -> None:
        if self.topk != 1:
            raise EASDConfigError("EASD and the entropy trace support chain drafting only (--speculative-eagle-topk 1)")
        self.easd, self.easd_trace = cfg, trace
        self.easd_top_n = cfg.top_n if cfg is not None else 1  # the trace needs entropies only
        self.easd_first_entropy: torch.Tensor | None = None
        self.easd_first_top: torch.Tensor | None = None
        # Every draft forward's logits output, in order, since the last draft or extend began.
        self.easd_outputs: list[Any] = []
        forward = self.draft_runner.forward

        def recording_forward(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            self.easd_outputs.append(out.logits_output)
            return out

        self.draft_runner.forward = recording_forward

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
        self._keep_first(batch.req_pool_indices, self.easd_outputs[-1].next_token_logits)
        return out

    def _draft_extend_for_decode(self, batch: Any, batch_result: Any, **kwargs: Any) -> Any:
        self.easd_outputs = []
        out = super()._draft_extend_for_decode(batch, batch_result, **kwargs)
        # SGLang has replaced next_token_logits by the rows of each request's last accepted token.
        self._keep_first(batch.req_pool_indices, self.easd_outputs[-1].next_token_logits)
        return out

    def draft(self, batch: Any, *, with_topology: bool = False) -> Any:
        self.easd_outputs = []  # filled by the chain steps of draft_forward
        out = super().draft(batch, with_topology=with_topology)
        verify_input = out[0] if with_topology else out
        if batch.forward_mode.is_idle():
            return out
        if self.easd_first_entropy is None:
            raise RuntimeError("EASD: a draft ran before any draft extend recorded d_1's distribution")
        idx = batch.req_pool_indices
        entropies, tops = [self.easd_first_entropy[idx]], [self.easd_first_top[idx]]
        for output in self.easd_outputs[: self.speculative_num_steps - 1]:
            entropy, top = self._stats(output.next_token_logits)
            entropies.append(entropy)
            tops.append(top)
        if len(entropies) != self.speculative_num_steps:
            raise RuntimeError(f"EASD saw {len(entropies)} draft distributions for {self.speculative_num_steps} steps")
        verify_input.easd_draft_entropy = torch.stack(entropies, dim=1)
        verify_input.easd_draft_top = torch.stack(tops, dim=1)
        verify_input.easd_config = self.easd
        verify_input.easd_trace = self.easd_trace
        return out


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
    """SGLang's EAGLE V2 worker with an `EASDDraftWorker` for drafting (EASD rule and/or trace)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg, trace = EASDConfig.from_env(), EntropyTrace.from_env()
        if cfg is None and trace is None:
            raise EASDConfigError("EASDWorkerV2 built without $SGLANG_EDSD_EASD or $SGLANG_EDSD_TRACE")
        check_draft_runs_eagerly(str(self.device))
        if self._draft_worker is not None:
            self._draft_worker.__class__ = EASDDraftWorker
            self._draft_worker.easd_setup(cfg, trace)


def easd_sample(
    original: Callable[..., Any], verify_input: Any, batch: Any, logits_output: Any, *args: Any, **kwargs: Any
) -> Any:
    """AROUND hook on eagle_sample: trace and/or apply the rule to verify inputs that carry draft statistics."""
    draft_entropy = getattr(verify_input, "easd_draft_entropy", None)
    if draft_entropy is None or batch.forward_mode.is_idle():
        return original(verify_input, batch, logits_output, *args, **kwargs)
    cfg, trace = verify_input.easd_config, verify_input.easd_trace
    logits = logits_output.next_token_logits
    if trace is not None:  # before the rule edits the logits
        bsz, steps = draft_entropy.shape
        target_entropy, _ = entropy_and_top(logits.view(bsz, steps + 1, -1)[:, :steps], 1)
    if cfg is not None:
        mask_rejected(cfg, logits, verify_input.draft_token, draft_entropy, verify_input.easd_draft_top)
    out = original(verify_input, batch, logits_output, *args, **kwargs)
    if trace is not None:
        # eagle_sample's second output counts the tokens each verify emits: accepted drafts + the bonus.
        trace.write(batch.reqs, draft_entropy, target_entropy, out[1] - 1)
    return out


def register_hooks() -> None:
    """Hook eagle_sample (the plugin calls this only when $SGLANG_EDSD_EASD or $SGLANG_EDSD_TRACE is set)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(SAMPLE_TARGET, easd_sample, HookType.AROUND)
