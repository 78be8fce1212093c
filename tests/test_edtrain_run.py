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
from sglang_edsd.draft_config import EDSDDraftConfig, validate_draft_folder
from sglang_edsd.edtrain import TrainConfigError, recipe
from sglang_edsd.edtrain import trainer as trainer_mod
from sglang_edsd.edtrain.checkpoint import load_checkpoint
from sglang_edsd.edtrain.trainer import epoch_order, train
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


def test_epoch_order_covers_every_sample_on_every_rank_count() -> None:
    for world in (1, 2, 3):
        ranks = epoch_order(10, world, seed=0, epoch=1)
        assert len({len(r) for r in ranks}) == 1
        assert {i for r in ranks for i in r} == set(range(10))
    assert epoch_order(10, 1, 0, 0) != epoch_order(10, 1, 0, 1)


def test_resume_after_a_crash_mid_epoch_gives_identical_weights(tiny_capture, tmp_path, monkeypatch) -> None:
    full = train(_cfg(), tiny_capture["capture"], tmp_path / "full", progress=False, export=False)
    assert not full["stopped"]

    real_getitem = trainer_mod.CaptureReader.__getitem__
    calls = {"n": 0}

    def crash_after_15(self, i):
        calls["n"] += 1
        # 10 reads are epoch 1; read 16 is epoch 2's sample 6: after the checkpoint at
        # sample 4 (checkpoint_every=2), before the next one.
        if calls["n"] > 15:
            raise KeyboardInterrupt
        return real_getitem(self, i)

    monkeypatch.setattr(trainer_mod.CaptureReader, "__getitem__", crash_after_15)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tiny_capture["capture"], tmp_path / "crashed", progress=False, export=False)
    state = load_checkpoint(tmp_path / "crashed")
    assert (state["epoch"], state["position"]) == (1, 4)
    monkeypatch.setattr(trainer_mod.CaptureReader, "__getitem__", real_getitem)
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

    with pytest.raises(SystemExit) as e:
        main(["train", "--capture", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--layer-ids", "1", "3"])
    assert e.value.code == 2


def test_torchrun_two_gloo_processes_train_and_export(tiny_capture, tmp_path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sglang_edsd.cli", "train", "--capture", str(tiny_capture["capture"]), "--out", str(tmp_path / "ddp"),
           "--layer-ids", "1", "3", "--epochs", "2", "--s-max", "2", "--lr", "2e-3", "--draft-vocab-size", "64",
           "--no-progress"]
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
    cfg.write_text('capture = "%s"\nout = "%s"\nlayer-ids = [1, 3]\nepochs = 1\ns_max = 1\ndraft_vocab_size = 64\n'
                   % (tiny_capture["capture"], tmp_path / "run"))
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
    assert full["agreement_per_step"][0] > evaluate_run(early, tiny_capture["capture"], progress=False)[
        "agreement_per_step"][0]
    a = full["agreement_per_step"]
    assert full["tau_proxy"] == pytest.approx(1 + a[0] + a[0] * a[1] + a[0] * a[1] * a[2])

    partial = tmp_path / "capture-1-4"
    capture(tiny_capture["target"], tiny_capture["work"] / "tokens.jsonl", partial, [1, 4], dtype="float32",
            progress=False)
    with pytest.raises(CaptureError, match=r"layer ids \[3\] were not captured.*needed by run"):
        evaluate_run(trained, partial, progress=False)

    main(["evaluate", "--run", str(trained), "--capture", str(tiny_capture["capture"]), "--out",
          str(tmp_path / "eval.json"), "--no-progress"])
    assert "tau proxy" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["agreement_per_step"] == full["agreement_per_step"]
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--run", str(tmp_path / "none"), "--capture", str(tiny_capture["capture"])])
    assert e.value.code == 2
