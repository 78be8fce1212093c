"""The plugin as SGLang loads it, and EDSD's server-argument handling in SGLang's real pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_edsd.draft_io import init_draft
from tests.helpers import edit_config, edit_weights


@pytest.mark.long
def test_entry_point_in_fresh_process() -> None:
    """`load_plugins()` (what every SGLang process runs) makes `from_string("EDSD")` work."""
    code = (
        "from sglang.srt.plugins import load_plugins; load_plugins();"
        "from sglang.srt.speculative.spec_info import SpeculativeAlgorithm;"
        "from sglang.srt.models.registry import ModelRegistry;"
        "a = SpeculativeAlgorithm.from_string('edsd');"
        "import json; print(json.dumps({'name': a.name, 'eagle3': a.is_eagle3(), 'topk': a.need_topk(),"
        " 'overlap': a.supports_overlap, 'model': ModelRegistry.models['LlamaForCausalLMEDSD'].__name__}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"name": "EDSD", "eagle3": True, "topk": True, "overlap": True, "model": "LlamaForCausalLMEDSD"}


@pytest.fixture(scope="module")
def resolve():
    """Run SGLang's own argument parsing + resolution pipeline (which calls our hooks)."""
    from sglang.srt.plugins import load_plugins

    load_plugins()
    from sglang.srt.arg_groups.overrides import resolved_view
    from sglang.srt.server_args import prepare_server_args

    def _resolve(args: list[str]):
        sa = prepare_server_args(args)
        sa.resolve_once()
        return resolved_view(sa)

    return _resolve


def _base(smollm2: Path) -> list[str]:
    return ["--model-path", str(smollm2), "--device", "cpu", "--speculative-algorithm", "EDSD"]


def test_default_shape_is_depth4_chain(resolve, smollm2: Path, smollm2_draft: Path) -> None:
    v = resolve(_base(smollm2) + ["--speculative-draft-model-path", str(smollm2_draft)])
    assert (v.speculative_num_steps, v.speculative_eagle_topk, v.speculative_num_draft_tokens) == (4, 1, 5)
    assert v.max_running_requests == 48
    assert v.speculative_draft_attention_backend == "intel_amx"


def test_chain_draft_tokens_follow_steps(resolve, smollm2: Path, smollm2_draft: Path) -> None:
    v = resolve(
        _base(smollm2)
        + [
            "--speculative-draft-model-path",
            str(smollm2_draft),
            "--speculative-num-steps",
            "2",
            "--speculative-eagle-topk",
            "1",
            "--speculative-num-draft-tokens",
            "7",
        ]
    )
    assert (v.speculative_num_steps, v.speculative_num_draft_tokens) == (2, 3)


def test_missing_draft_path(resolve, smollm2: Path) -> None:
    with pytest.raises(ValueError, match="needs --speculative-draft-model-path"):
        resolve(_base(smollm2))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("layer", r"layer id 30 is out of range .*L=30"),
        ("not-edsd", "is not an EDSD draft"),
        ("eagle3-draft", "is not an EDSD draft: it is an EAGLE-3"),
        ("missing-tensor", "missing tensor.*edfuse.down.weight"),
    ],
)
def test_bad_draft_rejected_at_startup(
    resolve, smollm2: Path, smollm2_draft: Path, tmp_path: Path, kind: str, message: str
) -> None:
    draft = tmp_path / "draft"
    shutil.copytree(smollm2_draft, draft)
    if kind == "layer":
        edit_config(draft, lambda c: c["eagle_config"].__setitem__("eagle_aux_hidden_state_layer_ids", [2, 30]))
    elif kind == "not-edsd":
        edit_config(draft, lambda c: (c.__setitem__("architectures", ["LlamaForCausalLMEagle3"]), c.pop("edsd_config")))
    elif kind == "eagle3-draft":
        shutil.rmtree(draft)
        init_draft(smollm2, draft, draft_vocab_size=8192, input_module="fc")
    else:
        edit_weights(draft, lambda t: t.pop("edfuse.down.weight"))
    with pytest.raises(ValueError, match=message):
        resolve(_base(smollm2) + ["--speculative-draft-model-path", str(draft)])


def test_dp_prefill_coordination_patch(resolve, smollm2: Path, smollm2_draft: Path, monkeypatch) -> None:
    """SGLang refuses this env flag for any name but EAGLE/EAGLE3/DSPARK; the patch admits EDSD only."""
    monkeypatch.setenv("SGLANG_ENABLE_DP_SPEC_PREFILL_COORDINATION", "1")
    v = resolve(_base(smollm2) + ["--speculative-draft-model-path", str(smollm2_draft)])
    assert v.speculative_algorithm == "EDSD"
    with pytest.raises(ValueError, match="DP spec/prefill coordination requires"):
        resolve(["--model-path", str(smollm2), "--device", "cpu", "--speculative-algorithm", "NGRAM"])


def test_patch_guard_fails_loudly_on_changed_sglang() -> None:
    from sglang.srt.arg_groups import speculative_hook

    from sglang_edsd.patches import PatchGuardError, dp_spec_prefill_coordination, guard

    guard(speculative_hook.handle_speculative_decoding, dp_spec_prefill_coordination.ANCHOR, "dp")
    with pytest.raises(PatchGuardError, match="must be revisited"):
        guard(speculative_hook._handle_dflash, dp_spec_prefill_coordination.ANCHOR, "dp")


def test_sglang_loader_is_strict(smollm2_draft: Path) -> None:
    """The model's own load_weights refuses bad tensors (SGLang's EAGLE-3 loader drops them)."""
    from safetensors.torch import load_file
    from torch import nn
    from transformers import LlamaConfig

    from sglang_edsd.draft_config import DraftConfigError
    from sglang_edsd.serving.draft_model import LlamaForCausalLMEDSD

    model = LlamaForCausalLMEDSD.__new__(LlamaForCausalLMEDSD)
    nn.Module.__init__(model)
    model.config = LlamaConfig(**json.loads((smollm2_draft / "config.json").read_text()))
    tensors = load_file(str(smollm2_draft / "model.safetensors"))
    tensors["model.extra.weight"] = tensors.pop("edfuse.gate.weight")
    with pytest.raises(DraftConfigError, match="missing tensor.*edfuse.gate.weight.*unexpected tensor.*extra.weight"):
        model.load_weights(iter(tensors.items()))
