"""EDSD answers SGLang like EAGLE3 does, method by method, so an SGLang upgrade cannot drift silently.

Every public method of SGLang's `SpeculativeAlgorithm` is called on EAGLE3 and on EDSD with
the same arguments (collaborators the method hands off to are replaced by recorders), unless
`spec_algo.DIFFERS_FROM_EAGLE3` lists it with a reason. A method SGLang adds later fails
here until it is given a case or a reason. Server-argument handling, the deliberate
difference, is compared in SGLang's real resolution pipeline instead.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from sglang_edsd.draft_io import init_draft


@pytest.fixture(scope="module")
def algos():
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from sglang_edsd.serving.spec_algo import register_algorithm

    register_algorithm()
    return SpeculativeAlgorithm.EAGLE3, SpeculativeAlgorithm.from_string("EDSD")


def _public_methods() -> list[str]:
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    return sorted(
        name for name, v in vars(SpeculativeAlgorithm).items() if inspect.isfunction(v) and not name.startswith("_")
    )


def _recorder(calls: list):
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return ("recorded", len(calls))

    return record


def _answers(algo, name: str, monkeypatch) -> object:
    """What `algo.<name>` answers for representative arguments."""
    method = getattr(algo, name)
    params = list(inspect.signature(method).parameters)
    if not params:
        return method()
    if name == "get_num_tokens_per_req_for_target_verify":
        return [method(n, draft) for n in (1, 5) for draft in (True, False)]
    if name == "resolve_max_speculative_num_draft_tokens":
        static = SimpleNamespace(speculative_num_draft_tokens=5, speculative_adaptive=False)
        adaptive = SimpleNamespace(
            speculative_num_draft_tokens=5, speculative_adaptive=True, speculative_adaptive_config=None
        )
        return [method(static), method(adaptive)]
    if name == "build_disagg_draft_input":
        import sglang.srt.speculative.eagle_disaggregation as eagle_disagg

        calls: list = []
        monkeypatch.setattr(eagle_disagg, "build_eagle_disagg_draft_input", _recorder(calls))
        return method("batch", "last_tokens", "future_map"), calls
    if name == "create_future_map":
        import sglang.srt.managers.overlap_utils as overlap_utils

        calls = []
        monkeypatch.setattr(overlap_utils, "FutureMap", _recorder(calls))
        method("device", "req_to_token_pool", True, False)
        (device, spec, *rest), _ = calls[0]
        return device, spec is algo, rest
    raise AssertionError(
        f"SpeculativeAlgorithm.{name}{inspect.signature(method)} has no parity case: add one "
        "to tests/test_spec_parity.py or a reason to spec_algo.DIFFERS_FROM_EAGLE3"
    )


def test_every_public_method_answers_like_eagle3(algos, monkeypatch) -> None:
    from sglang_edsd.serving.spec_algo import DIFFERS_FROM_EAGLE3

    eagle3, edsd = algos
    methods = _public_methods()
    assert set(DIFFERS_FROM_EAGLE3) <= set(methods), "a listed difference names a method SGLang no longer has"
    compared = [m for m in methods if m not in DIFFERS_FROM_EAGLE3]
    assert {"supports_grammar_overlap", "build_disagg_draft_input", "supports_mixed_chunk"} <= set(compared)
    differ = {m: (_answers(eagle3, m, monkeypatch), _answers(edsd, m, monkeypatch)) for m in compared}
    differ = {m: pair for m, pair in differ.items() if pair[0] != pair[1]}
    assert not differ, f"EDSD answers differently from EAGLE3 (EAGLE3, EDSD): {differ}"


def _resolve(args: list[str]):
    from sglang.srt.arg_groups.overrides import resolved_view
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args

    load_plugins()
    sa = prepare_server_args(args)
    sa.resolve_once()
    sa.check_server_args()  # as Engine start-up does next
    return resolved_view(sa)


@pytest.fixture(scope="module")
def eagle3_draft(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_draft(smollm2, tmp_path_factory.mktemp("eagle3-draft"), draft_vocab_size=8192, input_module="fc")


FIELDS = (
    "speculative_num_steps",
    "speculative_eagle_topk",
    "speculative_num_draft_tokens",
    "max_running_requests",
    "disable_overlap_schedule",
    "enable_mixed_chunk",
    "speculative_draft_attention_backend",
    "speculative_adaptive",
)


@pytest.mark.parametrize(
    "extra",
    [
        ["--speculative-num-steps", "4", "--speculative-eagle-topk", "1"],
        [
            "--speculative-num-steps",
            "3",
            "--speculative-eagle-topk",
            "4",
            "--speculative-num-draft-tokens",
            "8",
            "--enable-mixed-chunk",
        ],
        ["--speculative-adaptive"],
    ],
    ids=["chain", "tree-mixed-chunk", "adaptive"],
)
def test_server_args_resolve_like_eagle3(
    smollm2: Path, smollm2_draft: Path, eagle3_draft: Path, extra: list[str]
) -> None:
    """Given a drafting shape, EDSD's handling ends where SGLang's EAGLE3 handling does."""
    base = [
        "--model-path",
        str(smollm2),
        "--device",
        "cpu",
        *extra,
        "--speculative-draft-attention-backend",
        "intel_amx",
    ]
    eagle3 = _resolve(base + ["--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path", str(eagle3_draft)])
    edsd = _resolve(base + ["--speculative-algorithm", "EDSD", "--speculative-draft-model-path", str(smollm2_draft)])
    assert {f: getattr(edsd, f) for f in FIELDS} == {f: getattr(eagle3, f) for f in FIELDS}


def test_eagle_family_guards_apply_to_edsd(smollm2: Path, smollm2_draft: Path) -> None:
    """SGLang's topk > 1 guard (paged KV needs a tree-capable attention backend) stops EDSD too."""
    args = [
        "--model-path",
        str(smollm2),
        "--device",
        "cpu",
        "--speculative-algorithm",
        "EDSD",
        "--speculative-draft-model-path",
        str(smollm2_draft),
        "--speculative-num-steps",
        "3",
        "--speculative-eagle-topk",
        "4",
        "--speculative-num-draft-tokens",
        "8",
        "--page-size",
        "16",
        "--attention-backend",
        "torch_native",
    ]
    with pytest.raises(ValueError, match="speculative_eagle_topk > 1 with page_size > 1"):
        _resolve(args)


def test_multi_layer_eagle_refused(smollm2: Path, smollm2_draft: Path) -> None:
    args = [
        "--model-path",
        str(smollm2),
        "--device",
        "cpu",
        "--speculative-algorithm",
        "EDSD",
        "--speculative-draft-model-path",
        str(smollm2_draft),
        "--enable-multi-layer-eagle",
    ]
    with pytest.raises(ValueError, match="--enable-multi-layer-eagle is not supported"):
        _resolve(args)
