"""EDTrain runs on a tiny capture: exact resume after a crash, DDP on 2 gloo processes,
recipes, export, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sglang_edsd.capture import CaptureError, capture
from sglang_edsd.capture.reader import CaptureReader
from sglang_edsd.draft_config import EDSDDraftConfig, validate_draft_folder
from sglang_edsd.edtrain import TrainConfigError, recipe
from sglang_edsd.edtrain.checkpoint import load_checkpoint
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.packing import epoch_batches
from sglang_edsd.edtrain.sources import OnlineData, OnlineSource
from sglang_edsd.edtrain.target_head import TargetHead
from sglang_edsd.edtrain.trainer import Supervision, batch_loss, train
from sglang_edsd.edtrain.vocab import draft_vocab_from_data
from tests.synthetic import tiny_llama

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("edtrain")
    tiny_llama(work / "target", num_layers=8)
    gen = torch.Generator().manual_seed(1)
    with (work / "tokens.jsonl").open("w") as f:
        for i in range(10):
            n = int(torch.randint(24, 48, (1,), generator=gen))
            ids = torch.randint(0, 300, (n,), generator=gen).tolist()
            mask = [0] * 6 + [1] * (n - 6)
            f.write(json.dumps({"id": f"s{i}", "input_ids": ids, "loss_mask": mask}) + "\n")
    # EDSD's two layers and SGLang's EAGLE-3 defaults [1, 3, 4]: one capture serves both recipes.
    capture(work / "target", work / "tokens.jsonl", work / "capture", [1, 3, 4], dtype="float32", progress=False)
    return {"work": work, "target": work / "target", "capture": work / "capture"}


def _cfg(**kw):
    base = {"layer_ids": (1, 3), "epochs": 3, "s_max": 3, "lr": 2e-3, "draft_vocab_size": 64, "checkpoint_every": 2}
    return recipe(kw.pop("recipe", "edsd"), **{**base, **kw})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)["model"]


def test_epoch_batches_cover_every_sample_on_every_rank_count() -> None:
    lengths = [30, 10, 50, 20, 40, 10, 60, 30, 20, 10]
    for world in (1, 2, 3):
        for budget in (0, 64):
            batches = epoch_batches(lengths, world, seed=0, epoch=1, batch_tokens=budget)
            assert len(batches) % world == 0  # every rank runs the same number of micro-batches
            assert {i for b in batches for i in b} == set(range(10))
            assert all(len(b) == 1 or sum(lengths[i] for i in b) <= budget for b in batches)
    assert epoch_batches(lengths, 1, 0, 0, 0) != epoch_batches(lengths, 1, 0, 1, 0)


def test_resume_after_a_crash_mid_epoch_gives_identical_weights(tiny_capture, tmp_path, monkeypatch) -> None:
    full = train(_cfg(), tiny_capture["capture"], tmp_path / "full", progress=False, export=False)
    assert not full["stopped"]

    real_getitem = CaptureReader.__getitem__
    calls = {"n": 0}

    def crash_after_15(self, i):
        calls["n"] += 1
        # 10 reads are epoch 1; read 16 is epoch 2's sample 6: after the checkpoint at
        # sample 4 (checkpoint_every=2), before the next one.
        if calls["n"] > 15:
            raise KeyboardInterrupt
        return real_getitem(self, i)

    monkeypatch.setattr(CaptureReader, "__getitem__", crash_after_15)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tiny_capture["capture"], tmp_path / "crashed", progress=False, export=False)
    state = load_checkpoint(tmp_path / "crashed")
    assert (state["epoch"], state["position"]) == (1, 4)
    monkeypatch.setattr(CaptureReader, "__getitem__", real_getitem)
    resumed = train(_cfg(), tiny_capture["capture"], tmp_path / "crashed", progress=False, export=False)
    assert not resumed["stopped"]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "crashed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = [(h["loss"], h["acc_per_step"]) for h in full["history"]]
    hb = [(h["loss"], h["acc_per_step"]) for h in resumed["history"]]
    assert ha == hb


def test_resume_refuses_a_changed_config(tiny_capture, tmp_path) -> None:
    train(_cfg(epochs=1), tiny_capture["capture"], tmp_path, progress=False, export=False, stop_after_steps=1)
    with pytest.raises(TrainConfigError, match="different config.*lr"):
        train(_cfg(epochs=1, lr=1e-3), tiny_capture["capture"], tmp_path, progress=False, export=False)


def test_eagle3_recipe_exports_an_eagle3_draft(tiny_capture, tmp_path) -> None:
    out = train(_cfg(recipe="eagle3", layer_ids=(), epochs=1), tiny_capture["capture"], tmp_path, progress=False)
    cfg = validate_draft_folder(out["draft"], tiny_capture["target"])
    assert cfg.input_module == "fc" and cfg.layer_ids == (1, 3, 4)  # [1, L//2 - 1, L - 4] for L=8
    assert json.loads((Path(out["draft"]) / "config.json").read_text())["architectures"] == ["LlamaForCausalLMEagle3"]
    assert out["history"][0]["num_steps"] == 3 and out["history"][0]["mask_percent"] == 0


def test_clear_errors(tiny_capture, tmp_path) -> None:
    with pytest.raises(CaptureError, match=r"layer ids \[5\] were not captured.*needed by the training recipe"):
        train(_cfg(layer_ids=(1, 5)), tiny_capture["capture"], tmp_path / "a", progress=False)
    with pytest.raises(TrainConfigError, match="two layer ids"):
        train(_cfg(layer_ids=()), tiny_capture["capture"], tmp_path / "b", progress=False)
    with pytest.raises(TrainConfigError, match="exceeds the target vocab"):
        train(_cfg(draft_vocab_size=301), tiny_capture["capture"], tmp_path / "c", progress=False)


def test_cli_train_reports_bad_input(tiny_capture, tmp_path) -> None:
    from sglang_edsd.cli import main

    argv = ["train", "--capture", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--layer-ids", "1", "3"]
    assert main(argv) == 2
    with pytest.raises(CaptureError, match="no capture in"):  # --debug keeps the traceback
        main([*argv, "--debug"])


def test_torchrun_two_gloo_processes_train_and_export(tiny_capture, tmp_path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sglang_edsd.cli",
        "train",
        "--capture",
        str(tiny_capture["capture"]),
        "--out",
        str(tmp_path / "ddp"),
        "--layer-ids",
        "1",
        "3",
        "--epochs",
        "2",
        "--s-max",
        "2",
        "--lr",
        "2e-3",
        "--draft-vocab-size",
        "64",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp")
    assert state["world_size"] == 2 and state["epoch"] == 2
    history = [json.loads(x) for x in (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()]
    assert history[0]["samples"] == 10  # both ranks' samples counted: 5 each
    single = train(_cfg(epochs=2, s_max=2), tiny_capture["capture"], tmp_path / "single", progress=False)
    ddp_cfg = validate_draft_folder(tmp_path / "ddp" / "draft", tiny_capture["target"])
    assert ddp_cfg == EDSDDraftConfig.from_path(single["draft"])


def test_config_file_sets_defaults_and_rejects_unknown_keys(tiny_capture, tmp_path, capsys) -> None:
    from sglang_edsd.cli import main

    cfg = tmp_path / "train.toml"
    cfg.write_text(
        f'capture = "{tiny_capture["capture"]}"\nout = "{tmp_path / "run"}"\nlayer-ids = [1, 3]\nepochs = 1\n'
        "s_max = 1\ndraft_vocab_size = 64\n"
    )
    assert main(["train", "--config", str(cfg), "--lr", "1e-3", "--no-progress", "--no-export"]) == 0
    state = load_checkpoint(tmp_path / "run")
    assert (state["config"]["layer_ids"], state["config"]["epochs"], state["config"]["lr"]) == ((1, 3), 1, 1e-3)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(SystemExit, match="unknown option.*epochz"):
        main(["train", "--config", str(bad), "--capture", "x", "--out", "y"])


def test_evaluate_scores_a_run_on_captured_data(tiny_capture, tmp_path, capsys) -> None:
    from sglang_edsd.cli import main
    from sglang_edsd.edtrain.evaluate import evaluate_run

    trained, early = tmp_path / "trained", tmp_path / "early"
    train(_cfg(), tiny_capture["capture"], trained, progress=False, export=False)
    train(_cfg(), tiny_capture["capture"], early, progress=False, export=False, stop_after_steps=1)
    full = evaluate_run(trained, tiny_capture["capture"], progress=False)
    first = evaluate_run(trained, tiny_capture["capture"], steps=1, progress=False)
    assert full["steps"] == 3 and first["agreement_per_step"] == full["agreement_per_step"][:1]
    assert (
        full["agreement_per_step"][0]
        > evaluate_run(early, tiny_capture["capture"], progress=False)["agreement_per_step"][0]
    )
    a = full["agreement_per_step"]
    assert full["tau_proxy"] == pytest.approx(1 + a[0] + a[0] * a[1] + a[0] * a[1] * a[2])

    partial = tmp_path / "capture-1-4"
    capture(
        tiny_capture["target"], tiny_capture["work"] / "tokens.jsonl", partial, [1, 4], dtype="float32", progress=False
    )
    with pytest.raises(CaptureError, match=r"layer ids \[3\] were not captured.*needed by run"):
        evaluate_run(trained, partial, progress=False)

    main(
        [
            "evaluate",
            "--run",
            str(trained),
            "--capture",
            str(tiny_capture["capture"]),
            "--out",
            str(tmp_path / "eval.json"),
            "--no-progress",
        ]
    )
    assert "tau proxy" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["agreement_per_step"] == full["agreement_per_step"]
    assert main(["evaluate", "--run", str(tmp_path / "none"), "--capture", str(tiny_capture["capture"])]) == 2


def _online(tiny_capture) -> OnlineData:
    return OnlineData(tiny_capture["work"] / "tokens.jsonl", tiny_capture["target"])


def _supervised_model(tiny_capture, cfg):
    reader = CaptureReader(tiny_capture["capture"])
    sup = Supervision.build(TargetHead.load(tiny_capture["target"]), draft_vocab_from_data(reader, 64), 300)
    dcfg = EDSDDraftConfig(target=reader.target, layer_ids=cfg.layer_ids, expansion_size=48, draft_vocab_size=64)
    model = EDSDTrainDraft(dcfg)
    model.init_from_target(sup.lm_rows, sup.head.norm_weight, seed=0)
    return reader, sup, model


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def test_online_and_offline_training_steps_are_equal(tiny_capture, tmp_path) -> None:
    """Same tiny data: the online source hands the one training step the capture's exact tensors,
    so losses and gradients are bit-equal, and so are whole runs."""
    cfg = _cfg(precision="fp32")
    reader, sup, model = _supervised_model(tiny_capture, cfg)
    online = OnlineSource(_online(tiny_capture), cfg.layer_ids, cfg.max_length, "cpu", "fp32")
    for i in (0, 3, 7):
        off_loss, _ = batch_loss(model, [reader[i]], cfg, sup, 20.0, 3, "cpu")
        off_loss.backward()
        off = _grads(model)
        on_loss, _ = batch_loss(model, [online[i]], cfg, sup, 20.0, 3, "cpu")
        on_loss.backward()
        on = _grads(model)
        assert torch.equal(off_loss, on_loss)
        assert all(torch.equal(off[k], on[k]) for k in off)
    a = train(cfg, tiny_capture["capture"], tmp_path / "offline", progress=False, export=False)
    b = train(cfg, _online(tiny_capture), tmp_path / "online", progress=False, export=False)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    wa, wb = _weights(tmp_path / "offline"), _weights(tmp_path / "online")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_packed_batch_loss_is_the_sum_of_its_samples_losses(tiny_capture) -> None:
    cfg = _cfg(precision="fp32")
    reader, sup, model = _supervised_model(tiny_capture, cfg)
    samples = [reader[i] for i in (2, 5, 8, 9)]
    packed, packed_stats = batch_loss(model, samples, cfg, sup, 20.0, 3, "cpu")
    packed.backward()
    g_packed = _grads(model)
    total = torch.zeros(())
    trained = [0, 0, 0]
    for s in samples:
        loss, stats = batch_loss(model, [s], cfg, sup, 20.0, 3, "cpu")  # Mask-p per sample
        loss.backward()
        total = total + loss.detach()
        trained = [t + st.tokens for t, st in zip(trained, stats)]
    g_sum = _grads(model)
    torch.testing.assert_close(packed.detach(), total, rtol=1e-5, atol=1e-5)
    assert [st.tokens for st in packed_stats] == trained
    for k in g_sum:
        torch.testing.assert_close(g_packed[k], g_sum[k], rtol=1e-4, atol=1e-6)


def test_online_packed_bf16_run_resumes_mid_stream_exactly(tiny_capture, tmp_path) -> None:
    """A run sized in tokens (phases cross data-epoch ends), packed, bf16 autocast, online,
    with held-out scoring: stopped and resumed, it ends where the uninterrupted run ends."""
    cfg = _cfg(batch_tokens=100, token_budget=900, precision="bf16", checkpoint_every=0)
    kw = {"progress": False, "export": False, "heldout": tiny_capture["capture"], "eval_every": 300}
    full = train(cfg, _online(tiny_capture), tmp_path / "full", **kw)
    stopped = train(cfg, _online(tiny_capture), tmp_path / "resumed", stop_after_steps=5, **kw)
    assert stopped["stopped"] and stopped["epoch"] >= 1  # past the first data epoch
    resumed = train(cfg, _online(tiny_capture), tmp_path / "resumed", **kw)
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert [h["num_steps"] for h in full["history"]] == [1, 2, 3]  # Step-n per third of the budget
    assert full["tokens_seen"] >= 900 and full["history"][-1]["tokens_seen"] == full["tokens_seen"]
    evals = [json.loads(x) for x in (tmp_path / "full" / "evals.jsonl").read_text().splitlines()]
    assert [e["tokens_seen"] for e in evals][0] == 0 and evals[-1]["tokens_seen"] == full["tokens_seen"]
    assert len(evals) >= 4 and (tmp_path / "full" / "heldout.png").exists()
    assert evals == [json.loads(x) for x in (tmp_path / "resumed" / "evals.jsonl").read_text().splitlines()]
    assert 0 < evals[-1]["vocab_coverage"] <= 1


def test_decoder_init_from_a_target_layer(tiny_capture) -> None:
    from sglang_edsd.edtrain.target_head import TargetHeadError, load_target_layer

    cfg = _cfg()
    _, _, model = _supervised_model(tiny_capture, cfg)
    layer = load_target_layer(tiny_capture["target"], 5)
    model.init_decoder_from_target(layer)
    ours = model.layers[0]
    assert torch.equal(ours.self_attn.q_proj.weight[:, 32:], layer["self_attn.q_proj.weight"])
    assert torch.equal(ours.mlp.down_proj.weight, layer["mlp.down_proj.weight"])
    assert torch.equal(ours.hidden_norm.weight, layer["input_layernorm.weight"])
    assert ours.self_attn.q_proj.weight[:, :32].abs().max() < 0.2  # the token half stays a small random init
    with pytest.raises(TargetHeadError, match="decoder layers 0..7, not 8"):
        load_target_layer(tiny_capture["target"], 8)


def test_cli_online_train_and_errors(tiny_capture, tmp_path) -> None:
    from sglang_edsd.cli import main

    tokens, target = str(tiny_capture["work"] / "tokens.jsonl"), str(tiny_capture["target"])
    assert (
        main(
            [
                "train",
                "--online",
                "--data",
                tokens,
                "--target",
                target,
                "--out",
                str(tmp_path / "run"),
                "--layer-ids",
                "1",
                "3",
                "--token-budget",
                "200",
                "--batch-tokens",
                "128",
                "--epochs",
                "2",
                "--s-max",
                "2",
                "--draft-vocab-size",
                "64",
                "--init-layer",
                "6",
                "--no-progress",
            ]
        )
        == 0
    )
    validate_draft_folder(tmp_path / "run" / "draft", tiny_capture["target"])
    for argv in (
        ["--online", "--target", target],
        ["--online", "--data", tokens],
        ["--online", "--data", tokens, "--target", target, "--capture", str(tiny_capture["capture"])],
    ):
        assert main(["train", *argv, "--out", str(tmp_path / "bad"), "--layer-ids", "1", "3"]) == 2


def test_an_online_heldout_set_shares_the_training_targets_model(tiny_capture, tmp_path, monkeypatch) -> None:
    from sglang_edsd.edtrain import sources

    loads = []
    real = sources.load_target_model
    monkeypatch.setattr(sources, "load_target_model", lambda *a: loads.append(a) or real(*a))
    out = train(
        _cfg(precision="fp32"),
        _online(tiny_capture),
        tmp_path,
        progress=False,
        export=False,
        heldout=_online(tiny_capture),
        stop_after_steps=1,
    )
    assert out["stopped"] and len(loads) == 1
    evals = (tmp_path / "evals.jsonl").read_text().splitlines()
    assert len(evals) == 1 and json.loads(evals[0])["samples"] == 10


def test_warm_start_continues_an_exported_draft_where_its_run_stopped(tiny_capture, tmp_path) -> None:
    """--init-draft + --skip-tokens: the exported weights and vocabulary come back exactly (the
    held-out score before any step equals the first run's last), and the data stream resumes at
    the first run's position, not at the start."""
    kw = {"progress": False, "heldout": tiny_capture["capture"]}
    first = train(_cfg(batch_tokens=100, token_budget=400), _online(tiny_capture), tmp_path / "a", **kw)
    from sglang_edsd.edtrain.export import export_draft

    draft = export_draft(tmp_path / "a", tmp_path / "a-fp32", dtype="float32")
    cfg = _cfg(
        batch_tokens=100,
        token_budget=900,
        epochs=1,
        init_draft=str(draft),
        skip_tokens=first["tokens_seen"],
        lr_schedule="cosine",
        warmup_tokens=100,
    )
    train(cfg, _online(tiny_capture), tmp_path / "b", stop_after_steps=1, **kw)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert b["evals"][0]["tokens_seen"] == first["tokens_seen"]
    assert b["evals"][0]["agreement_per_step"] == a["evals"][-1]["agreement_per_step"]
    assert torch.equal(b["draft_to_target"], a["draft_to_target"])
    assert (b["epoch"], b["position"]) == (a["epoch"], a["position"] + 1)
    assert b["tokens_seen"] > first["tokens_seen"]
    from sglang_edsd.edtrain.report import plot_scaling

    assert plot_scaling({"a": a["evals"], "a then b": a["evals"] + b["evals"]}, tmp_path / "s.png").stat().st_size
    with pytest.raises(TrainConfigError, match="draft shape"):
        train(_cfg(init_draft=str(draft), layer_ids=(1, 4)), tiny_capture["capture"], tmp_path / "c", **kw)


def test_lr_schedule_is_a_pure_function_of_tokens() -> None:
    from sglang_edsd.edtrain.schedule import lr_factor

    assert lr_factor(0, 0, 1000, 100, "constant") == pytest.approx(0.01)
    assert lr_factor(99, 0, 1000, 100, "constant") == 1.0
    assert lr_factor(500, 0, 1000, 0, "constant") == 1.0
    assert lr_factor(500, 500, 1500, 0, "cosine") == pytest.approx(1.0)  # starts at the skip
    assert lr_factor(1000, 500, 1500, 0, "cosine") == pytest.approx(0.55)
    assert lr_factor(1600, 500, 1500, 0, "cosine") == pytest.approx(0.1)
    with pytest.raises(TrainConfigError, match="skip_tokens"):
        _cfg(token_budget=100, skip_tokens=100)
    with pytest.raises(TrainConfigError, match="init_layer"):
        _cfg(init_layer=2, init_draft="x")


def test_checkpoint_writer_writes_the_state_at_save_time_in_the_background(tmp_path, monkeypatch) -> None:
    """The loop only waits for a host copy: what lands on disk is the state when `save` was
    called, even though the loop goes on changing its tensors and stats; a failed write is
    raised, naming the file, at the next `save` or `wait`."""
    from sglang_edsd.edtrain import checkpoint

    weights, stats = torch.zeros(4), {"loss_sum": [1.0]}
    writer = checkpoint.CheckpointWriter(tmp_path)
    writer.save({"model": {"w": weights}, "stats": stats})
    weights += 1  # the loop's next optimizer step
    stats["loss_sum"][0] = 9.0
    writer.wait()
    state = load_checkpoint(tmp_path)
    assert torch.equal(state["model"]["w"], torch.zeros(4)) and state["stats"] == {"loss_sum": [1.0]}
    assert writer.count == 1 and writer.blocking_seconds > 0

    def disk_full(path, state):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_checkpoint", disk_full)
    writer.save({"model": {"w": weights}})
    with pytest.raises(checkpoint.CheckpointWriteError, match=r"checkpoint\.pt failed: No space left"):
        writer.wait()


def test_run_summary_splits_wall_time(tiny_capture, tmp_path) -> None:
    """Where a run's time goes: the loop (of which the sample source), checkpoints, the rest."""
    out = train(_cfg(batch_tokens=100), _online(tiny_capture), tmp_path, progress=False, export=False)
    assert out["checkpoints"] >= 3  # every phase end (and every 2 steps)
    assert 0 < out["source_seconds"] < out["train_seconds"] < out["wall_seconds"]
    assert 0 < out["checkpoint_seconds"] < out["wall_seconds"]
    assert all(0 < h["source_seconds"] < h["seconds"] for h in out["history"])
