"""The EDSD draft format: what a valid draft is and the errors a bad one gets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sglang_edsd.draft_config import (
    DraftConfigError,
    EDSDDraftConfig,
    TargetInfo,
    validate_draft_folder,
)
from sglang_edsd.draft_io import parse_expansion
from tests.helpers import edit_config, edit_weights


@pytest.fixture
def draft(smollm2_draft: Path, tmp_path: Path) -> Path:
    out = tmp_path / "draft"
    shutil.copytree(smollm2_draft, out)
    return out


def test_init_draft_matches_target(smollm2: Path, smollm2_draft: Path) -> None:
    cfg = validate_draft_folder(smollm2_draft, smollm2)
    target = TargetInfo.from_path(smollm2)
    assert cfg.target == target
    assert cfg.expansion_size == target.intermediate_size == 1536  # paper default m
    assert cfg.layer_ids == (14, 26)  # EAGLE-3's mid/high ids for L=30 until EDSelect runs
    assert cfg.feature_size == 2 * 576


def test_expansion_choices(smollm2: Path) -> None:
    t = TargetInfo.from_path(smollm2)
    assert [parse_expansion(s, t) for s in ("d", "m", "5d", "1000")] == [576, 1536, 2880, 1000]
    with pytest.raises(DraftConfigError, match="expansion"):
        parse_expansion("huge", t)


def test_d2t_maps_draft_ids_to_target_ids(smollm2: Path, tmp_path: Path) -> None:
    from sglang_edsd.draft_io import vocab_maps

    ids = torch.tensor([5, 2, 40000])
    maps = vocab_maps(ids, 49152)
    assert (maps["d2t"] + torch.arange(3)).tolist() == [5, 2, 40000]  # what SGLang computes
    assert maps["t2d"].sum() == 3 and maps["t2d"][40000]
    with pytest.raises(DraftConfigError, match="same target id"):
        vocab_maps(torch.tensor([1, 1]), 49152)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("edfuse.gate.weight"), "missing tensor.*edfuse.gate.weight"),
        (lambda t: t.__setitem__("fc.weight", torch.zeros(576, 1152)), "unexpected tensor.*fc.weight"),
        (lambda t: t.__setitem__("edfuse.up.weight", torch.zeros(1536, 100)), "edfuse.up.weight has shape"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_bad_weights_are_named(draft: Path, smollm2: Path, edit, message: str) -> None:
    edit_weights(draft, edit)
    with pytest.raises(DraftConfigError, match=message):
        validate_draft_folder(draft, smollm2)


def test_layer_id_out_of_range(draft: Path, smollm2: Path) -> None:
    edit_config(draft, lambda c: c["eagle_config"].__setitem__("eagle_aux_hidden_state_layer_ids", [3, 29]))
    with pytest.raises(DraftConfigError, match=r"layer id 29 .*L=30.*0\.\.28"):
        validate_draft_folder(draft, smollm2)


def test_draft_for_another_target(draft: Path, smollm2: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-target"
    other.mkdir()
    cfg = json.loads((smollm2 / "config.json").read_text())
    cfg["vocab_size"] = 32000
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DraftConfigError, match="another target: target vocab_size is 32000"):
        validate_draft_folder(draft, other)


def test_not_an_edsd_draft(draft: Path, smollm2: Path) -> None:
    def to_eagle3(c: dict) -> None:
        c["architectures"] = ["LlamaForCausalLMEagle3"]
        c.pop("edsd_config")

    edit_config(draft, to_eagle3)
    with pytest.raises(DraftConfigError, match="is not an EDSD draft"):
        validate_draft_folder(draft, smollm2)


def test_malformed_config_json(draft: Path, smollm2: Path) -> None:
    (draft / "config.json").write_text("{not json")
    with pytest.raises(DraftConfigError, match="not valid JSON"):
        EDSDDraftConfig.from_path(draft)


def test_missing_weights_file(draft: Path, smollm2: Path) -> None:
    (draft / "model.safetensors").unlink()
    with pytest.raises(DraftConfigError, match="no \\*.safetensors"):
        validate_draft_folder(draft, smollm2)
