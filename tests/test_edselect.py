"""EDSelect: metric properties with known answers, streaming == batch, the selection rule,
an end-to-end run on a tiny random Llama, and clear errors for bad input. CPU, < 60 s."""

from __future__ import annotations

import argparse
import json
import math
import sys

import pytest
import torch

from sglang_edsd.edselect.augment import augment_ids, replacement_pool, view_generator
from sglang_edsd.edselect.errors import EDSelectError
from sglang_edsd.edselect.metrics import (
    CurvatureAccumulator,
    LidarAccumulator,
    ScatterAccumulator,
    curvature,
    effective_rank,
    lidar_from_views,
    matrix_entropy,
    matrix_entropy_of_states,
)
from sglang_edsd.edselect.result import EDSelectResult
from sglang_edsd.edselect.select import eligible_layer_ids, select_layers


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- matrix entropy


def test_matrix_entropy_isotropic_is_log_d():
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(), dtype=torch.float64))
    assert matrix_entropy_of_states(3.0 * q) == pytest.approx(math.log(d), abs=1e-9)
    z = torch.randn(20000, d, generator=_gen(1), dtype=torch.float64)  # Gram of many isotropic samples
    assert matrix_entropy(z.T @ z) == pytest.approx(math.log(d), abs=0.01)
    assert effective_rank(torch.ones(d)) == pytest.approx(d)


def test_matrix_entropy_rank_one_is_zero_and_side_independent():
    u, v = torch.randn(50, 1, generator=_gen()), torch.randn(1, 8, generator=_gen(1))
    assert matrix_entropy_of_states(u @ v) == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(5, 40, generator=_gen(2))
    # Z Z^T (5 x 5) and Z^T Z (40 x 40) share the non-zero spectrum
    assert matrix_entropy(z @ z.T) == pytest.approx(matrix_entropy(z.T @ z), abs=1e-6)
    assert matrix_entropy_of_states(z) == pytest.approx(matrix_entropy_of_states(z.T), abs=1e-6)
    assert matrix_entropy(torch.zeros(4, 4)) == 0.0


# ---------------------------------------------------------------- curvature


def test_curvature_straight_line_is_zero_even_with_uneven_steps():
    t = torch.arange(12, dtype=torch.float64)[:, None] ** 2  # accelerating, still straight
    a, b = (
        torch.randn(1, 32, generator=_gen(), dtype=torch.float64),
        torch.randn(1, 32, generator=_gen(1), dtype=torch.float64),
    )
    assert curvature(a + t * b) == pytest.approx(0.0, abs=1e-6)


def test_curvature_zigzag_and_reversal():
    t = torch.arange(10, dtype=torch.float64)
    sign = (-1.0) ** t
    zigzag = torch.stack([t, sign, torch.zeros_like(t)], dim=1)  # steps (1, +-2): cos = -3/5
    assert curvature(zigzag) == pytest.approx(math.acos(-0.6), abs=1e-9)
    back_and_forth = torch.stack([sign, torch.zeros_like(t)], dim=1)
    assert curvature(back_and_forth) == pytest.approx(math.pi, abs=1e-6)
    assert curvature(zigzag) > 2.0 > 0.1 > curvature(torch.outer(t, torch.ones(3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="T >= 3"):
        curvature(torch.randn(2, 4))


# ---------------------------------------------------------------- LiDAR


def _views(n: int, q: int, d: int, spread: float, seed: int) -> torch.Tensor:
    g = _gen(seed)
    centres = 5.0 * torch.randn(n, 1, d, generator=g, dtype=torch.float64)
    return centres + spread * torch.randn(n, q, d, generator=g, dtype=torch.float64)


def test_lidar_high_for_tight_separated_clusters_low_when_views_are_noise():
    n, q, d = 40, 6, 8
    tight = lidar_from_views(_views(n, q, d, spread=0.05, seed=0))
    assert tight > 7.0  # all min(N - 1, d) = 8 directions separate prompts robustly
    # same class separation, but augmentation noise swamps 6 of the 8 directions:
    # only 2 directions stay invariant to the views -> effective rank ~ 2
    noisy = _views(n, q, d, spread=0.05, seed=0)
    noisy[..., 2:] += 50.0 * torch.randn(n, q, d - 2, generator=_gen(5), dtype=torch.float64)
    assert 1.5 < lidar_from_views(noisy) < 3.0
    # only two directions carry prompt identity at all: also ~ 2
    low = _views(n, q, d, spread=0.05, seed=4)
    low[..., 2:] = 0.05 * torch.randn(n, q, d - 2, generator=_gen(5), dtype=torch.float64)
    assert 1.5 < lidar_from_views(low) < 3.0
    # LiDAR is an effective rank, blind to magnitude: views that are pure isotropic noise
    # make Sigma_b ~ Sigma_w / Q in every direction, i.e. a flat spectrum and a HIGH value.
    assert lidar_from_views(torch.randn(n, q, d, generator=_gen(3), dtype=torch.float64)) > 6.0


def test_lidar_is_scale_invariant():
    e = _views(12, 4, 6, spread=0.5, seed=1)
    assert lidar_from_views(1e3 * e) == pytest.approx(lidar_from_views(e), rel=1e-6)


# ---------------------------------------------------------------- streaming == batch


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("fold_rows", [100, 3])  # 100: rows kept (n x n side); 3: folded into d x d
def test_scatter_accumulator_matches_batch(centered, fold_rows):
    d = 6
    x = 1e3 + torch.randn(20, d, generator=_gen(), dtype=torch.float64)  # large mean: cancellation check
    acc = ScatterAccumulator(d, centered=centered, fold_rows=fold_rows)
    for chunk in x.split([1, 4, 2, 7, 6]):
        acc.update(chunk)
    ref = x - x.mean(0) if centered else x
    assert acc.folded == (fold_rows == 3)
    torch.testing.assert_close(acc.scatter(), ref.T @ ref, rtol=1e-5, atol=1e-3 if centered else 1.0)
    assert acc.entropy() == pytest.approx(matrix_entropy(ref.T @ ref), abs=1e-4)


@pytest.mark.parametrize(
    ("d", "fold_rows", "within_folded", "between_folded"),
    [(20, None, True, False), (7, 4, True, True), (7, 1000, False, False)],
)
def test_lidar_accumulator_matches_batch(d, fold_rows, within_folded, between_folded):
    views = _views(15, 5, d, spread=0.8, seed=2)
    acc = LidarAccumulator(d, fold_rows=fold_rows)
    for cls in views:
        acc.update(cls)
    assert (acc.within.folded, acc.between.folded) == (within_folded, between_folded)
    assert acc.value() == pytest.approx(lidar_from_views(views), rel=1e-4)


def test_curvature_accumulator_is_mean_and_skips_short():
    seqs = [torch.randn(n, 5, generator=_gen(n)) for n in (6, 9, 2, 4)]
    acc = CurvatureAccumulator()
    for s in seqs:
        acc.update(s)
    assert acc.count == 3 and acc.skipped == 1
    assert acc.value() == pytest.approx(sum(curvature(s) for s in seqs if len(s) >= 3) / 3)


# ---------------------------------------------------------------- selection rule


def test_select_takes_argmaxes_distinct_ascending():
    curv = {0: 0.1, 1: 0.2, 2: 0.9, 3: 0.3, 4: 0.2}
    lid = {0: 5.0, 1: 9.0, 2: 1.0, 3: 2.0, 4: 3.0}
    choice = select_layers(curv, lid, num_hidden_layers=6)
    assert choice.layer_ids == (1, 2) and choice.curvature_layer == 2 and choice.lidar_layer == 1
    assert not choice.tie_broken and choice.hf_hidden_states_indices == (2, 3)


def test_select_tie_keeps_shared_layer_and_adds_lidar_runner_up():
    curv = {0: 0.1, 1: 0.2, 2: 0.9, 3: 0.3, 4: 0.8}
    lid = {0: 5.0, 1: 4.0, 2: 9.0, 3: 7.0, 4: 7.0}  # runner-up tie 3 vs 4 -> lowest id
    choice = select_layers(curv, lid, num_hidden_layers=6)
    assert choice.tie_broken and choice.layer_ids == (2, 3)
    assert choice.curvature_layer == choice.lidar_layer == 2
    # equal maxima within one metric resolve to the lowest id
    assert select_layers({0: 1.0, 1: 1.0, 2: 0.0}, {0: 0.0, 1: 0.0, 2: 5.0}, 4).curvature_layer == 0


def test_select_excludes_last_layer():
    assert eligible_layer_ids(5) == [0, 1, 2, 3]
    curv = {0: 0.1, 1: 0.5, 2: 0.2, 3: 0.3, 4: 99.0}
    lid = {0: 1.0, 1: 2.0, 2: 3.0, 3: 1.0, 4: 99.0}
    choice = select_layers(curv, lid, num_hidden_layers=5)
    assert choice.layer_ids == (1, 2) and 4 not in choice.layer_ids
    with pytest.raises(EDSelectError, match="at least 3 decoder layers"):
        select_layers({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}, num_hidden_layers=2)
    with pytest.raises(EDSelectError, match="finite Curvature"):
        select_layers({0: math.nan, 1: math.nan}, {0: 1.0, 1: 2.0}, num_hidden_layers=3)


# ---------------------------------------------------------------- augmentation


def test_augmentation_is_deterministic_and_keeps_specials():
    ids = torch.tensor([1, 5, 6, 7, 3, 8, 9, 10, 11, 12, 3, 13] * 4)
    special = frozenset({1, 3})
    pool = replacement_pool(100, special)
    a = augment_ids(ids, view_generator(0, 7, 1), pool, special, prob=0.5)
    b = augment_ids(ids, view_generator(0, 7, 1), pool, special, prob=0.5)
    c = augment_ids(ids, view_generator(0, 7, 2), pool, special, prob=0.5)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, ids)
    assert a[0] == 1 and (a == 3).sum() == (ids == 3).sum() and (a == 1).sum() == (ids == 1).sum()
    assert not set(a.tolist()) & {0} - set(ids.tolist())  # replacements come from the pool
    short = augment_ids(torch.tensor([1, 5]), view_generator(0, 0, 1), pool, special, prob=1.0)
    assert short.numel() == 2 and short[0] == 1


# ---------------------------------------------------------------- end to end on a tiny Llama

WORDS = [f"w{i}" for i in range(120)]
CHAT_TEMPLATE = "{% for m in messages %}[BOS]{{ m['role'] }} {{ m['content'] }} [EOS] {% endfor %}"


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory: pytest.TempPathFactory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", "user", "assistant", "system"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", pad_token="[PAD]"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def _texts(n: int, seed: int = 0) -> list[str]:
    g = _gen(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(6, 20, (1,), generator=g))
        out.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=g)))
    return out


def _write_jsonl(path, records) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _parse(argv: list[str]) -> argparse.Namespace:
    from sglang_edsd.edselect.command import add_select_arguments

    return add_select_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_run_edselect_tiny_llama_is_deterministic(tiny_target):
    from sglang_edsd.edselect.collect import run_edselect

    _, model, tokenizer = tiny_target
    texts = _texts(6)
    r1 = run_edselect(model, tokenizer, texts, max_len=16, num_views=3, seed=1, progress=False)
    r2 = run_edselect(model, tokenizer, texts, max_len=16, num_views=3, seed=1, progress=False)
    assert r1.layer_ids == [0, 1, 2] and r1.hf_indices == [1, 2, 3]
    assert r1.to_dict()["layers"] == r2.to_dict()["layers"]
    a, b = r1.selected_layer_ids
    assert 0 <= a < b <= 2
    assert r1.curvature_layer == max(r1.layer_ids, key=lambda i: (r1.metric("curvature")[i], -i))
    assert r1.lidar_layer == max(r1.layer_ids, key=lambda i: (r1.metric("lidar")[i], -i))
    assert all(math.isfinite(v) for v in r1.curvature + r1.lidar + r1.prompt_entropy + r1.dataset_entropy)


def test_select_main_end_to_end_writes_json_png_and_draft(tiny_target, tmp_path, capsys):
    from sglang_edsd.draft_config import EDSDDraftConfig
    from sglang_edsd.draft_io import init_draft
    from sglang_edsd.edselect.command import select_main

    path, _, _ = tiny_target
    texts = _texts(7, seed=2)
    records = [{"text": t} for t in texts[:4]]
    records += [
        {"messages": [{"role": "user", "content": texts[4]}, {"role": "assistant", "content": texts[5]}]},
        {"conversations": [{"from": "human", "value": texts[6]}, {"from": "gpt", "value": texts[0]}]},
    ]
    data = tmp_path / "calib.jsonl"
    _write_jsonl(data, records[:3] + [""] + records[3:])  # a blank line is ignored
    draft = init_draft(path, tmp_path / "draft", layer_ids=(0, 1), seed=0)
    out = tmp_path / "out"
    assert (
        select_main(
            _parse(
                [
                    "--target",
                    str(path),
                    "--data",
                    str(data),
                    "--num-samples",
                    "128",
                    "--out",
                    str(out),
                    "--num-views",
                    "3",
                    "--max-len",
                    "32",
                    "--write-draft-config",
                    str(draft),
                    "--no-progress",
                ]
            )
        )
        == 0
    )
    printed = capsys.readouterr().out
    result = json.loads((out / "edselect.json").read_text())
    ids = result["selected_layer_ids"]
    assert len(ids) == 2 and ids == sorted(ids) and ids[0] != ids[1] and set(ids) <= {0, 1, 2}
    assert result["selected_hf_hidden_states_indices"] == [i + 1 for i in ids]
    assert [x["sglang_id"] for x in result["layers"]] == [0, 1, 2]
    assert [x["hf_hidden_states_index"] for x in result["layers"]] == [1, 2, 3]
    assert result["settings"]["num_samples_used"] == 6 and result["settings"]["num_records"] == 6
    assert (out / "edselect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"SGLang layer ids {ids}" in printed and "HF hidden_states indices" in printed
    assert list(EDSDDraftConfig.from_path(draft).layer_ids) == ids
    loaded = EDSelectResult.from_json(out / "edselect.json")
    assert list(loaded.selected_layer_ids) == ids


def _expect_error(argv, capsys, match: str) -> None:

    from sglang_edsd.cli import main

    assert main(["select", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and match in err, err


def test_bad_inputs_give_clear_errors(tiny_target, tmp_path, capsys):
    path, model, tokenizer = tiny_target
    out = str(tmp_path / "out")
    base = ["--target", str(path), "--out", out]
    _expect_error(base + ["--data", str(tmp_path / "missing.jsonl")], capsys, "calibration data file not found")
    empty = tmp_path / "empty.jsonl"
    _write_jsonl(empty, ["", "  "])
    _expect_error(base + ["--data", str(empty)], capsys, "has no records")
    bad_json = tmp_path / "bad.jsonl"
    _write_jsonl(bad_json, [{"text": "w1 w2 w3"}, "{not json"])
    _expect_error(base + ["--data", str(bad_json)], capsys, "bad.jsonl:2: not valid JSON")
    no_field = tmp_path / "nofield.jsonl"
    _write_jsonl(no_field, [{"text": "w1 w2 w3"}, {"prompt": "w1"}])
    _expect_error(base + ["--data", str(no_field)], capsys, "none of 'text', 'messages', 'conversations'")
    bad_role = tmp_path / "badrole.jsonl"
    _write_jsonl(bad_role, [{"messages": [{"role": "wizard", "content": "w1"}]}])
    _expect_error(base + ["--data", str(bad_role)], capsys, "unknown role 'wizard'")
    empty_text = tmp_path / "emptytext.jsonl"
    _write_jsonl(empty_text, [{"text": ""}])
    _expect_error(base + ["--data", str(empty_text)], capsys, "'text' must be a non-empty string")
    good = tmp_path / "good.jsonl"
    _write_jsonl(good, [{"text": t} for t in _texts(3)])
    _expect_error(
        ["--target", str(tmp_path / "nope"), "--out", out, "--data", str(good)], capsys, "target model folder not found"
    )
    _expect_error(
        base + ["--data", str(good), "--write-draft-config", str(tmp_path / "nodraft")],
        capsys,
        "draft config not found",
    )
    _expect_error(base + ["--data", str(good), "--num-samples", "0"], capsys, "num_samples must be >= 1")
    from sglang_edsd.draft_io import init_draft

    eagle3 = init_draft(
        path, tmp_path / "eagle3", layer_ids=(0, 1, 2), input_module="fc"
    )  # 3 layers: not an EDSelect pair
    _expect_error(base + ["--data", str(good), "--write-draft-config", str(eagle3)], capsys, "reads 3 layers")

    from sglang_edsd.edselect.collect import run_edselect
    from sglang_edsd.edselect.data import record_to_text

    with pytest.raises(EDSelectError, match="at least 2 calibration texts"):
        run_edselect(model, tokenizer, ["w1 w2 w3"], progress=False)
    with pytest.raises(EDSelectError, match="num_views must be >= 2"):
        run_edselect(model, tokenizer, ["w1 w2", "w3 w4"], num_views=1, progress=False)
    with pytest.raises(EDSelectError, match="non-empty strings"):
        run_edselect(model, tokenizer, ["w1 w2", "  "], progress=False)
    with pytest.raises(EDSelectError, match="no chat template"):
        record_to_text({"messages": [{"role": "user", "content": "hi"}]}, tokenizer=None)


def test_edselect_does_not_import_sglang():
    import subprocess

    code = (
        "import sys, sglang_edsd.edselect as e; e.run_edselect; e.select_main; "
        "import sglang_edsd.edselect.metrics, sglang_edsd.edselect.data; "
        "assert not any(m == 'sglang' or m.startswith('sglang.') for m in sys.modules), 'sglang imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
