"""Tensor parallelism: the sharded EDFuse is the unsharded one, and EDSD at `--tp 2` is lossless.

Unit level: simulated ranks (SGLang's parallel context overridden per rank, a stand-in group
whose all-reduce hands back the rank's partial sum, summed here as the real all-reduce does)
each load the full checkpoint tensors through the layers' own weight loaders, as the served
model's `load_weights` does. Server level: SmolLM2 with the shipped draft at `--tp 2` on CPU
(two scheduler processes, SGLang's gloo all-reduce) against `--tp 1` EDSD and against `--tp 2`
without speculation, greedy, float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_streams import EDFuseRunner
from tests.helpers import chat_ids

FEATURES, HIDDEN, EXPANSION = 32, 16, 24


class _RankGroup:
    """Stand-in for one rank's TP group: counts all-reduces and returns the partial sum."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank_in_group, self.world_size, self.all_reduces = rank, size, 0

    def all_reduce(self, partial: torch.Tensor) -> torch.Tensor:
        self.all_reduces += 1
        return partial


def _rank_outputs(
    full: EDFuse, tp: int, features: torch.Tensor, embeds: torch.Tensor, chunk_bytes: int
) -> list[tuple[EDFuse, torch.Tensor, _RankGroup]]:
    """Each simulated rank's TPEDFuse, loaded from `full`'s tensors, its output and its group."""
    from sglang.srt.model_loader.weight_utils import default_weight_loader
    from sglang.srt.runtime_context import get_parallel

    from sglang_edsd.serving.edfuse_tp import TPEDFuse

    tensors = {name: p.detach() for name, p in full.named_parameters()}
    ranks = []
    for rank in range(tp):
        group = _RankGroup(rank, tp)
        with get_parallel().override(tp_size=tp, tp_rank=rank, tp_group=group):
            shard = TPEDFuse(FEATURES, HIDDEN, EXPANSION)
            for name, param in shard.named_parameters():
                getattr(param, "weight_loader", default_weight_loader)(param, tensors[name])
            runner = EDFuseRunner(shard, torch.device("cpu"), chunk_bytes=chunk_bytes)
            with torch.no_grad():
                ranks.append((shard, runner(features, embeds), group))
    return ranks


@pytest.mark.parametrize("tp", [2, 4])
def test_sharded_edfuse_equals_unsharded(tp: int) -> None:
    torch.manual_seed(0)
    full = EDFuse(FEATURES, HIDDEN, EXPANSION)
    torch.nn.init.normal_(full.norm.weight)
    torch.nn.init.normal_(full.norm.bias)
    features, embeds = torch.randn(9, FEATURES), torch.randn(9, HIDDEN)
    ranks = _rank_outputs(full, tp, features, embeds, chunk_bytes=2**20)
    rows = EXPANSION // tp
    for rank, (shard, _, group) in enumerate(ranks):
        part = slice(rank * rows, (rank + 1) * rows)
        assert torch.equal(shard.gate.weight, full.gate.weight[part])
        assert torch.equal(shard.up.weight, full.up.weight[part])
        assert torch.equal(shard.down.weight, full.down.weight[:, part])
        assert torch.equal(shard.norm.weight, full.norm.weight) and torch.equal(shard.norm.bias, full.norm.bias)
        assert group.all_reduces == 1  # one all-reduce per forward, after down
    with torch.no_grad():
        want = full(features, embeds)
    torch.testing.assert_close(sum(out for _, out, _ in ranks), want, rtol=1e-6, atol=1e-6)


def test_sharded_edfuse_chunks_rows_and_reduces_once_per_chunk() -> None:
    torch.manual_seed(1)
    full = EDFuse(FEATURES, HIDDEN, EXPANSION)
    features, embeds = torch.randn(10, FEATURES), torch.randn(10, HIDDEN)
    # 12-wide shards in float32: 4 rows of an E-wide temporary fit 192 bytes -> 3 chunks (4, 3, 3).
    ranks = _rank_outputs(full, 2, features, embeds, chunk_bytes=4 * 12 * 4)
    assert [group.all_reduces for _, _, group in ranks] == [3, 3]
    with torch.no_grad():
        want = full(features, embeds)
    torch.testing.assert_close(sum(out for _, out, _ in ranks), want, rtol=1e-6, atol=1e-6)


def test_expansion_not_divisible_by_tp_is_a_clear_error() -> None:
    from sglang.srt.runtime_context import get_parallel

    from sglang_edsd.serving.edfuse_tp import TPEDFuse

    with get_parallel().override(tp_size=5, tp_rank=0, tp_group=_RankGroup(0, 5)):
        with pytest.raises(ValueError, match="m=24 is not divisible by the draft's tensor-parallel size 5"):
            TPEDFuse(FEATURES, HIDDEN, EXPANSION)


def test_cpu_support_builds_tp_groups_without_pynccl() -> None:
    """The hook that lets `--tp N --device cpu` start: still anchored in SGLang, and it turns PyNccl off."""
    from sglang.srt.distributed import parallel_state

    from sglang_edsd.cpu_support import distributed
    from sglang_edsd.patches import guard

    guard(parallel_state.init_model_parallel_group, distributed.ANCHOR, distributed.__name__)
    seen: dict = {}
    distributed._without_pynccl(lambda *args, **kwargs: seen.update(kwargs), [[0, 1]], 0, "gloo", use_pynccl=True)
    assert seen["use_pynccl"] is False


PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
]
NEW_TOKENS = 24
# SGLang on CPU wants one core set per rank when ranks outnumber NUMA nodes.
TP2 = (["--tp", "2"], {"SGLANG_CPU_OMP_THREADS_BIND": "0|1"})


@pytest.fixture(scope="module")
def served(smollm2: Path) -> dict[str, list[dict]]:
    """Greedy outputs of each configuration, one server at a time (2 cores)."""
    from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
    from sglang_edsd.launcher import cpu_args, edsd_args, launch_all
    from tests.servers import LOG_DIR, greedy_ids, require_cpu_servers

    require_cpu_servers()
    base = cpu_args("float32", max_total_tokens=4096)
    edsd = edsd_args(shipped_draft(SMOLLM2_EDSD))
    configs = {
        "tp1-edsd": (base + edsd, None),
        "tp2-plain": (base + TP2[0], TP2[1]),
        "tp2-edsd": (base + TP2[0] + edsd, TP2[1]),
    }
    prompts = [chat_ids(smollm2, p) for p in PROMPTS]
    outputs = {}
    for name, (args, env) in configs.items():
        server = launch_all({name: (smollm2, args)}, LOG_DIR, env=env)[name]
        try:
            outputs[name] = [greedy_ids(server, ids, NEW_TOKENS) for ids in prompts]
        finally:
            server.stop()
    return outputs


@pytest.mark.server
def test_tp2_edsd_is_lossless(served) -> None:
    """Token for token equal to the same --tp 2 server without speculation, and to --tp 1 EDSD."""
    plain = [o["ids"] for o in served["tp2-plain"]]
    assert [o["ids"] for o in served["tp2-edsd"]] == plain
    assert [o["ids"] for o in served["tp1-edsd"]] == plain
    assert all(plain) and max(len(ids) for ids in plain) == NEW_TOKENS


@pytest.mark.server
def test_tp2_draft_proposes_what_the_unsharded_draft_proposes(served) -> None:
    """The sharded draft accepts exactly as many tokens per request as the unsharded one (a
    wrongly sharded EDFuse would still be lossless, but its drafts would be rejected)."""
    stats = {
        name: [(o["meta"]["spec_verify_ct"], o["meta"]["spec_num_correct_drafts"]) for o in served[name]]
        for name in ("tp1-edsd", "tp2-edsd")
    }
    assert stats["tp2-edsd"] == stats["tp1-edsd"]
    assert sum(correct for _, correct in stats["tp2-edsd"]) > 0
