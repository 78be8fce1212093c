"""The trained SmolLM2 drafts that ship inside the package: present, valid, small, and what the
demo serves. Their acceptance and speed are benchmark numbers (benchmarks/bench_tau.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sglang_edsd.demo import DEMO_STEPS, default_draft
from sglang_edsd.draft_config import validate_draft_folder
from sglang_edsd.drafts import SMOLLM2_EAGLE3, SMOLLM2_EDSD, shipped_draft

ROOT = Path(__file__).parent.parent
PROBES = ROOT / "benchmarks/results/smollm2-online/probes-layers.json"
SERVED = ROOT / "benchmarks/results/smollm2-3m-tau.json"  # the shipped drafts' served benchmark
MAX_BYTES = 30 * 2**20


@pytest.mark.parametrize(
    "name, architecture, input_module",
    [
        (SMOLLM2_EDSD, "LlamaForCausalLMEDSD", "edfuse"),
        (SMOLLM2_EAGLE3, "LlamaForCausalLMEagle3", "fc"),
    ],
)
def test_shipped_draft_is_valid_bf16_and_small(smollm2: Path, name: str, architecture: str, input_module: str):
    folder = shipped_draft(name)
    config = validate_draft_folder(folder, smollm2)
    assert json.loads((folder / "config.json").read_text())["architectures"] == [architecture]
    assert config.input_module == input_module
    assert (folder / "model.safetensors").stat().st_size < MAX_BYTES
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        weights = [f.get_tensor(k) for k in f.keys() if k not in ("d2t", "t2d")]
    assert weights and all(w.dtype == torch.bfloat16 for w in weights)
    card = (folder / "README.md").read_text()
    assert "benchmarks/smollm2_online_drafts.sh" in card and "SmolLM2-135M-Instruct" in card


def test_edsd_draft_reads_the_best_probed_pair_and_eagle3_the_sglang_default():
    """The shipped EDSD draft reads the layer pair with the best held-out tau proxy among the
    online probes (EDSelect's pick included), never a pair chosen on evaluation prompts."""
    pairs = json.loads(PROBES.read_text())["results"]["pairs"]
    chosen = max(pairs.values(), key=lambda p: p["tau_proxy"])["layer_ids"]
    edsd = json.loads((shipped_draft(SMOLLM2_EDSD) / "config.json").read_text())
    eagle3 = json.loads((shipped_draft(SMOLLM2_EAGLE3) / "config.json").read_text())
    assert edsd["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == chosen
    num_layers = edsd["edsd_config"]["target"]["num_hidden_layers"]
    assert eagle3["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [1, num_layers // 2 - 1, num_layers - 4]


def test_demo_serves_the_shipped_edsd_draft():
    assert default_draft() == shipped_draft(SMOLLM2_EDSD)


def test_demo_depth_is_the_fastest_served_depth_of_the_shipped_draft():
    """The demo's default chain depth is the one at which the shipped EDSD draft decoded fastest
    relative to no speculation in its committed served benchmark, not a guess."""
    configs = json.loads(SERVED.read_text())["configs"]
    edsd = [c for c in configs.values() if c["algorithm"] == "EDSD" and c["draft"].endswith(SMOLLM2_EDSD)]
    assert len(edsd) >= 2
    assert DEMO_STEPS == max(edsd, key=lambda c: c["speedup"])["steps"]


def test_demo_refuses_a_chain_depth_below_one_before_starting_a_server(capsys: pytest.CaptureFixture):
    from sglang_edsd.cli import main

    assert main(["demo", "--steps", "0"]) == 2
    assert "steps (the EDSD chain depth) must be >= 1, got 0" in capsys.readouterr().err


def test_a_missing_shipped_draft_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no shipped draft 'nope'.*smollm2_online_drafts.sh"):
        shipped_draft("nope")
