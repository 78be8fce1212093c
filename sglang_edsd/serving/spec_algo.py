"""The EDSD speculative algorithm as registered with SGLang.

`EDSDSpecAlgo` answers SGLang's `is_*` questions like EAGLE-3 does, so the scheduler,
model runner and worker run their whole EAGLE-3 path for it: target aux hidden-state
capture (the two EDSelect layers named in the draft config), the `d2t` hot-token map,
draft CUDA-graph buffers and chain/tree verify. The worker is SGLang's EAGLE V2 worker,
which supports overlap scheduling.
"""

from __future__ import annotations

import logging
from typing import Any

from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
from sglang.srt.speculative.spec_registry import CustomSpecAlgo

from sglang_edsd import envs
from sglang_edsd.draft_config import DraftConfigError, validate_draft_folder
from sglang_edsd.patches import guard
from sglang_edsd.serving.model_sources import local_draft_folder, target_info

logger = logging.getLogger(__name__)

ALGORITHM_NAME = "EDSD"
# EDSD's serving default (paper Sec. 4.4): a depth-4 chain.
DEFAULT_STEPS, DEFAULT_TOPK, DEFAULT_DRAFT_TOKENS = 4, 1, 5

# SpeculativeAlgorithm methods whose bodies reach EAGLE-3's behaviour through `is_*()` (or
# not at all), so with our `is_eagle()`/`is_eagle3()` answers they answer as for EAGLE3.
# They replace CustomSpecAlgo's plugin defaults, which answer otherwise (no grammar overlap,
# no PD-disaggregation draft input, static width under adaptive steps) or are missing
# (AttributeError at start-up). tests/test_spec_parity.py checks every public method against EAGLE3.
_BORROWED_FROM_EAGLE = (
    "carries_draft_hidden_states",
    "create_future_map",
    "need_topk",
    "get_platform_worker_cls",
    "build_disagg_draft_input",
    "get_num_tokens_per_req_for_target_verify",
    "supports_grammar_overlap",
    "has_draft_kv",
    "resolve_max_speculative_num_draft_tokens",
)
# Public methods of SGLang's EAGLE3 where EDSD deliberately answers differently.
DIFFERS_FROM_EAGLE3 = {
    "handle_server_args": "EDSD's depth-4 chain default, its refusals and CPU draft backend, "
    "then SGLang's own EAGLE-family handling",
    "create_worker": "CustomSpecAlgo.create_worker -> edsd_worker_factory: EAGLE V2 worker or its "
    "EASD variant; multi-layer EAGLE is refused in handle_server_args",
}


class EDSDSpecAlgo(CustomSpecAlgo):
    """A plugin algorithm that takes SGLang's EAGLE-3 code path."""

    def is_eagle(self) -> bool:
        return True

    def is_eagle3(self) -> bool:
        return True

    def supports_mixed_chunk(self) -> bool:
        # SpeculativeAlgorithm's body tests enum identity, so borrowing it would say False.
        return True

    def handle_server_args(self, server_args: Any) -> None:
        """EDSD's depth-4 chain when the user gives no shape, then SGLang's EAGLE-family handling
        (max running requests, CPU overlap, mixed chunk, topk > 1 backend guards, chain width)."""
        sa = server_args
        if sa.speculative_use_rejection_sampling:
            raise ValueError(
                "EDSD drafts use a pruned draft vocabulary; --speculative-use-rejection-sampling "
                "needs draft vocab == target vocab and is not supported"
            )
        if sa.enable_multi_layer_eagle:
            raise ValueError("EDSD drafts have one decoder layer; --enable-multi-layer-eagle is not supported")
        if (
            sa.speculative_num_steps is None
            and sa.speculative_eagle_topk is None
            and sa.speculative_num_draft_tokens is None
        ):
            sa.speculative_num_steps, sa.speculative_eagle_topk = DEFAULT_STEPS, DEFAULT_TOPK
            sa.speculative_num_draft_tokens = DEFAULT_DRAFT_TOKENS
        else:
            sa.speculative_num_steps = sa.speculative_num_steps or DEFAULT_STEPS
            sa.speculative_eagle_topk = sa.speculative_eagle_topk or DEFAULT_TOPK
        if sa.speculative_eagle_topk == 1 and sa.speculative_num_draft_tokens != sa.speculative_num_steps + 1:
            if sa.speculative_num_draft_tokens is not None:
                logger.warning("EDSD: speculative_num_draft_tokens set to num_steps + 1 for a chain (topk=1)")
            sa.speculative_num_draft_tokens = sa.speculative_num_steps + 1
        if sa.speculative_num_draft_tokens is None:
            raise ValueError("EDSD with --speculative-eagle-topk > 1 needs --speculative-num-draft-tokens")
        if sa.device == "cpu" and sa.speculative_draft_attention_backend is None:
            # SGLang's draft attention factory has a CPU entry only under the intel_amx name.
            sa.speculative_draft_attention_backend = "intel_amx"
        # SGLang's own EAGLE-family handling (`_handle_eagle_family`), reached through the enum
        # member because its dispatch tests enum identity. `sa` is SGLang's recorder for plugin
        # hooks: that code reads our writes above and declares its own on the real record.
        SpeculativeAlgorithm.EAGLE3.handle_server_args(sa)


for _name in _BORROWED_FROM_EAGLE:
    if _name not in vars(SpeculativeAlgorithm):
        raise RuntimeError(
            f"sglang_edsd: SpeculativeAlgorithm.{_name} is gone from this SGLang; "
            "EDSDSpecAlgo was written against sglang 0.5.23"
        )
    setattr(EDSDSpecAlgo, _name, vars(SpeculativeAlgorithm)[_name])
guard(SpeculativeAlgorithm.handle_server_args, "_handle_eagle_family(server_args)", "EDSD server-argument handling")


def validate_server_args(server_args: Any) -> None:
    """Fail fast, before any model is built, on a draft that cannot serve this target (hub ids
    resolved as SGLang's loader resolves them, see `model_sources`)."""
    if not server_args.speculative_draft_model_path:
        raise ValueError(
            "--speculative-algorithm EDSD needs --speculative-draft-model-path (an EDSD draft folder; "
            "make one with `sglang-edsd init-draft`)"
        )
    draft_path = server_args.speculative_draft_model_path
    try:
        draft = local_draft_folder(draft_path, server_args.speculative_draft_model_revision, server_args.download_dir)
        config = validate_draft_folder(draft, target_info(server_args))
        if config.input_module != "edfuse":
            raise DraftConfigError(
                f"{draft_path} is not an EDSD draft: it is an EAGLE-3 "
                "(fc) draft; serve it with --speculative-algorithm EAGLE3"
            )
    except DraftConfigError as e:
        raise ValueError(f"EDSD draft rejected: {e}") from None


def edsd_worker_factory(server_args: Any) -> type:
    """SGLang's EAGLE V2 worker (EDSD differs in the draft model, not in the loop), or its EASD
    variant when $SGLANG_EDSD_EASD configures the lossy entropy-aware verify,
    $SGLANG_EDSD_TRACE asks for per-position entropy records or $SGLANG_EDSD_ENTROPY_STOP
    turns the entropy stop on."""
    from sglang_edsd.easd.rule import EASDConfig

    if EASDConfig.from_env() is not None or envs.TRACE.get() or envs.ENTROPY_STOP.get():
        from sglang_edsd.easd.worker import EASDWorkerV2

        return EASDWorkerV2
    from sglang.srt.speculative.eagle_worker_v2 import EAGLEWorkerV2

    return EAGLEWorkerV2


def register_algorithm() -> None:
    """Register EDSD once per process (plugins can be loaded more than once in tests)."""
    from sglang.srt.speculative.spec_registry import get_spec

    if get_spec(ALGORITHM_NAME) is not None:
        return
    SpeculativeAlgorithm.register(
        ALGORITHM_NAME,
        supports_overlap=True,
        validate_server_args=validate_server_args,
        spec_class=EDSDSpecAlgo,
    )(edsd_worker_factory)
