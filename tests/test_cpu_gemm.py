"""The few-row GEMM route (oneDNN, packed weights): same numbers as F.linear to rounding, row results
independent of the row count, taken only where it is meant to be, hooked into real SGLang."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sglang_edsd.cpu_support import gemm
from sglang_edsd.cpu_support.gemm import MAX_ROWS, MIN_ROWS, few_row_linear, takes_route


@pytest.mark.parametrize("shape", [(5, 96), (2, 3, 96), (MIN_ROWS, 96), (MAX_ROWS, 96)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_f_linear(shape, with_bias):
    torch.manual_seed(0)
    x, w = torch.randn(*shape), torch.randn(200, 96)
    b = torch.randn(200) if with_bias else None
    out = few_row_linear(x, w, b)
    assert out.shape == F.linear(x, w, b).shape and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(960, 576), (576, 1536), (3072, 576)])
def test_a_rows_result_does_not_depend_on_the_rows_beside_it(shape):
    """Verify (5 rows), a tree (9) and a batch of chains (3..64) compute each row alike, so a
    draft position's target logits do not depend on how many rows shared the call."""
    torch.manual_seed(1)
    w, x = torch.randn(*shape), torch.randn(MAX_ROWS, shape[1])
    full = few_row_linear(x, w)
    for rows in (MIN_ROWS, 5, 9, 17):
        assert torch.equal(few_row_linear(x[:rows], w), full[:rows])


def test_packed_weight_follows_weight_updates():
    torch.manual_seed(2)
    w, x = torch.randn(64, 32), torch.randn(5, 32)
    few_row_linear(x, w)
    w.mul_(2.0)  # in place on the tensor: its version counter moves
    torch.testing.assert_close(few_row_linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    w.data.mul_(2.0)  # through .data, as SGLang's weight loaders write: seen via the update hooks
    gemm._weights_updated(lambda self: None, None)
    torch.testing.assert_close(few_row_linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_route_is_float32_few_rows_only():
    w = torch.randn(8, 4)
    assert takes_route(torch.randn(5, 4), w)
    assert takes_route(torch.randn(1, 3, 4), w)
    assert not takes_route(torch.randn(1, 4), w)  # one-row decode keeps SGLang's call
    assert not takes_route(torch.randn(MAX_ROWS + 1, 4), w)  # prefill keeps SGLang's call
    assert not takes_route(torch.randn(5, 4, dtype=torch.bfloat16), w.bfloat16())
    assert not takes_route(torch.randn(5, 4), w.double())
    assert not takes_route(torch.randn(2, 4), w.double())  # two rows are timed only where the route applies


@pytest.mark.parametrize(("packed_s", "blas_s"), [(1.0, 2.0), (2.0, 1.0)])
def test_two_rows_take_the_gemm_timed_faster_once_per_weight(monkeypatch, packed_s, blas_s):
    timings = []

    def timed(*calls):
        timings.append(len(calls))
        return [packed_s, blas_s]

    monkeypatch.setattr(gemm, "_median_seconds", timed)
    w = torch.randn(8, 4)
    for _ in range(3):
        assert takes_route(torch.randn(2, 4), w) is (packed_s < blas_s)
    assert timings == [2]  # timed on the first two-row call only
    assert takes_route(torch.randn(5, 4), w)  # three rows and more never time


def test_timing_runs_both_gemms_on_the_real_input():
    w, x = torch.randn(64, 32), torch.randn(2, 32)
    packed, blas = gemm._median_seconds(lambda: few_row_linear(x, w), lambda: F.linear(x, w))
    assert packed > 0 and blas > 0
    assert takes_route(x, w) is w._edsd_packed_faster


_PROBE = """
import json, torch, torch.nn.functional as F
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
import sglang_edsd.cpu_support.gemm as gemm
calls = []
real = gemm.few_row_linear
gemm.few_row_linear = lambda *a: calls.append(a[0].shape[0]) or real(*a)
layer = torch.nn.Module(); layer.weight = torch.nn.Parameter(torch.randn(64, 32), requires_grad=False)
method = UnquantizedLinearMethod()
for rows in (1, 5):
    x = torch.randn(rows, 32)
    assert torch.allclose(method.apply(layer, x), F.linear(x, layer.weight), atol=1e-5)
print(json.dumps({"routed_rows": calls, "lm_head_hooked": hasattr(LogitsProcessor._compute_lm_head, "__wrapped__")}))
"""


@pytest.mark.long
@pytest.mark.parametrize("switch", ["1", "0"])
def test_hooked_into_sglang_by_the_plugin(switch, monkeypatch):
    """In a fresh process, load_plugins() routes a 5-row SGLang linear (not a 1-row one);
    SGLANG_EDSD_CPU_GEMM=0 turns it off."""
    monkeypatch.setenv("SGLANG_EDSD_CPU_GEMM", switch)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == (
        {"routed_rows": [5], "lm_head_hooked": True} if switch == "1" else {"routed_rows": [], "lm_head_hooked": False}
    )
