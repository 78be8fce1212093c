"""EDTrain: the training loop (paper Sec. 3.2, App. A.8) over an offline capture.

Per epoch t: Mask-p_t drops the top p_t% highest-entropy loss-bearing tokens of each sample
(Eq. 5) and the training-time-test horizon is n_t (Eq. 6); the `eagle3` recipe and the
ablations switch either off. One sample per rank per micro-step, AdamW, gradient clipping,
a checkpoint every `checkpoint_every` optimizer steps and at every epoch end. Runs alone
or under `torchrun` (DDP; gloo on CPU, NCCL on GPU). No sglang import: this runs on any
torch machine.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from sglang_edsd.capture import CaptureReader
from sglang_edsd.draft_config import EDSDDraftConfig, TargetInfo
from sglang_edsd.draft_io import eagle3_layer_ids, parse_expansion
from sglang_edsd.edtrain.checkpoint import load_checkpoint, save_checkpoint
from sglang_edsd.edtrain.export import export_draft
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.objective import make_labels, unroll_loss
from sglang_edsd.edtrain.recipes import TrainConfig, TrainConfigError
from sglang_edsd.edtrain.report import plot_history
from sglang_edsd.edtrain.schedule import mask_percent, num_steps
from sglang_edsd.edtrain.target_head import TargetHead
from sglang_edsd.edtrain.vocab import draft_vocab_from_capture


def resolve_layer_ids(cfg: TrainConfig, reader: CaptureReader) -> tuple[int, ...]:
    """The recipe's layers, checked against what the capture holds."""
    ids = tuple(sorted(cfg.layer_ids))
    if not ids and cfg.input_module == "fc":
        ids = eagle3_layer_ids(reader.target)
    if not ids:
        if len(reader.layer_ids) != 2:
            raise TrainConfigError(
                f"EDSD needs two layer ids: the capture holds {list(reader.layer_ids)}; pass --layer-ids "
                "or --layers-from an EDSelect result"
            )
        ids = tuple(reader.layer_ids)
    reader.require_layers(ids, "the training recipe")
    return ids


def epoch_order(num_samples: int, world: int, seed: int, epoch: int) -> list[list[int]]:
    """Each rank's sample order for one epoch: a seeded permutation, dealt round-robin.

    Padded by wrapping around so every rank runs the same number of steps (DDP needs it):
    at most world-1 samples are seen twice in an epoch, none is skipped.
    """
    perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    perm += perm[: (-num_samples) % world]
    return [perm[r::world] for r in range(world)]


def _setup_distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return dist.get_rank(), world


@dataclass(frozen=True)
class Supervision:
    """What turns a captured sample into labels, built once per run: the frozen target head,
    its lm_head rows for the draft vocabulary, and which target ids the draft can propose."""

    head: TargetHead
    d2t: torch.Tensor
    lm_rows: torch.Tensor
    in_vocab: torch.Tensor

    @classmethod
    def build(cls, head: TargetHead, d2t: torch.Tensor, vocab_size: int) -> Supervision:
        in_vocab = torch.zeros(vocab_size, dtype=torch.bool, device=d2t.device)
        in_vocab[d2t] = True
        return cls(head, d2t, head.restricted(d2t), in_vocab)


def new_stats(steps: int) -> dict[str, Any]:
    return {"samples": 0, "tokens": 0, "seconds": 0.0, "loss_sum": [0.0] * steps, "trained": [0] * steps,
            "correct": [0] * steps, "scored": [0] * steps}


def add_step_stats(stats: dict[str, Any], step_stats: list) -> None:
    """Add one sample's per-step loss and agreement counts to `stats` (see `new_stats`)."""
    for k, s in enumerate(step_stats):
        stats["loss_sum"][k] += float(s.loss.detach()) * s.tokens
        stats["trained"][k] += s.tokens
        stats["correct"][k] += s.correct
        stats["scored"][k] += s.scored


def _reduce_stats(stats: dict[str, Any], world: int) -> dict[str, Any]:
    if world == 1:
        return stats
    keys = ["loss_sum", "trained", "correct", "scored"]
    flat = torch.tensor([stats["samples"], stats["tokens"]] + [float(v) for k in keys for v in stats[k]],
                        dtype=torch.float64)
    dist.all_reduce(flat)
    n = len(stats["loss_sum"])
    out = {"samples": int(flat[0]), "tokens": int(flat[1]), "seconds": stats["seconds"]}
    for i, k in enumerate(keys):
        out[k] = flat[2 + i * n : 2 + (i + 1) * n].tolist()
    return out


def _epoch_record(epoch: int, p: float, n: int, stats: dict[str, Any], step_weight: float) -> dict[str, Any]:
    step_loss = [s / max(t, 1) for s, t in zip(stats["loss_sum"], stats["trained"])]
    return {
        "epoch": epoch, "mask_percent": p, "num_steps": n, "samples": stats["samples"], "tokens": stats["tokens"],
        "seconds": round(stats["seconds"], 2), "tokens_per_s": round(stats["tokens"] / max(stats["seconds"], 1e-9), 1),
        "loss": sum(step_weight**k * v for k, v in enumerate(step_loss)),
        "loss_per_step": step_loss, "trained_tokens_per_step": [int(t) for t in stats["trained"]],
        "acc_per_step": [c / max(s, 1) for c, s in zip(stats["correct"], stats["scored"])],
    }


def train(cfg: TrainConfig, capture_dir: str | Path, out_dir: str | Path, *, target_path: str | Path | None = None,
          draft_vocab: str | Path | None = None, device: str | None = None, progress: bool = True,
          stop_after_steps: int | None = None, export: bool = True) -> dict[str, Any]:
    """Train (or resume) a draft into `out_dir`; returns the run summary.

    `stop_after_steps` ends the process's work after that many optimizer steps of this
    call (a controlled interruption: tests and time-boxed sessions resume from it).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = _setup_distributed(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = CaptureReader(capture_dir)
    cfg = replace(cfg, layer_ids=resolve_layer_ids(cfg, reader))
    cfg.validate()
    target_path = Path(target_path or reader.manifest["target_path"])
    head = TargetHead.load(target_path)
    state = load_checkpoint(out)
    if state is not None:
        _check_resume(state, cfg, world, out)
        d2t = state["draft_to_target"]
    else:
        d2t = draft_vocab_from_capture(reader, cfg.draft_vocab_size, draft_vocab)
    dcfg = EDSDDraftConfig(target=reader.target, layer_ids=cfg.layer_ids,
                           expansion_size=parse_expansion(cfg.expansion, reader.target),
                           draft_vocab_size=cfg.draft_vocab_size, token_layernorm=cfg.token_layernorm,
                           input_module=cfg.input_module)
    dcfg.check_target(TargetInfo.from_path(target_path))
    sup = Supervision.build(head.to(device), d2t.to(device), reader.target.vocab_size)
    model = EDSDTrainDraft(dcfg)
    model.init_from_target(sup.lm_rows, sup.head.norm_weight, cfg.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    epoch, pos, history, stats = 0, 0, [], None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, pos, history, stats = state["epoch"], state["position"], state["history"], state["stats"]
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def snapshot(e: int, p: int, s: dict[str, Any] | None) -> None:
        if rank == 0:
            save_checkpoint(out, {"config": cfg.to_dict(), "draft_config": dcfg.to_hf_dict(), "draft_to_target": d2t,
                                  "world_size": world, "epoch": e, "position": p, "stats": s, "history": history,
                                  "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                  "optimizer": opt.state_dict()})

    steps_done = 0
    while epoch < cfg.epochs:
        p_t = mask_percent(epoch, cfg.epochs, cfg.gamma) if cfg.mask_p else 0.0
        n_t = num_steps(epoch, cfg.epochs, cfg.s_max) if cfg.step_n else cfg.s_max
        order = epoch_order(len(reader), world, cfg.seed, epoch)[rank]
        stats = stats or new_stats(n_t)
        bar = tqdm(total=len(order), initial=pos, desc=f"epoch {epoch + 1}/{cfg.epochs} (p={p_t:g}%, n={n_t})",
                   disable=not progress or rank != 0, unit="sample")
        while pos < len(order):
            t0 = time.perf_counter()
            last_micro = (pos + 1) % cfg.grad_accum == 0 or pos + 1 == len(order)
            sample = reader[order[pos]]
            with (nullcontext() if last_micro or world == 1 else ddp.no_sync()):
                loss, step_stats = sample_loss(ddp, sample, cfg, sup, p_t, n_t, device)
                (loss / cfg.grad_accum).backward()
            if last_micro:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                steps_done += 1
            pos += 1
            n_tok = min(int(sample["input_ids"].shape[0]), cfg.max_length)
            stats["samples"] += 1
            stats["tokens"] += n_tok
            stats["seconds"] += time.perf_counter() - t0
            add_step_stats(stats, step_stats)
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if last_micro and pos < len(order):
                if cfg.checkpoint_every and steps_done % cfg.checkpoint_every == 0:
                    snapshot(epoch, pos, stats)
                if stop_after_steps is not None and steps_done >= stop_after_steps:
                    snapshot(epoch, pos, stats)
                    bar.close()
                    return {"stopped": True, "epoch": epoch, "position": pos, "run_dir": str(out)}
        bar.close()
        history.append(_epoch_record(epoch, p_t, n_t, _reduce_stats(stats, world), cfg.step_weight))
        epoch, pos, stats = epoch + 1, 0, None
        snapshot(epoch, pos, stats)
        if rank == 0:
            _write_history(out, history)
            h = history[-1]
            print(f"epoch {h['epoch'] + 1}: loss {h['loss']:.4f}, top-1 agreement per step "
                  f"{[round(a, 3) for a in h['acc_per_step']]}, {h['tokens_per_s']} tokens/s", flush=True)
    summary = {"stopped": False, "run_dir": str(out), "history": history, "config": cfg.to_dict(),
               "train_seconds": round(sum(h["seconds"] for h in history), 2)}
    if rank == 0:
        plot_history(history, out / "curves.png")
        if export:
            summary["draft"] = str(export_draft(out, out / "draft", target_path=target_path))
        (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2) + "\n")
    if world > 1:
        dist.barrier()
    return summary


def sample_loss(model: torch.nn.Module, sample: dict[str, Any], cfg: TrainConfig, sup: Supervision, p_t: float,
                n_t: int, device: str) -> tuple[torch.Tensor, list]:
    """The weighted TTT loss of one captured sample and its per-step stats (training and evaluation)."""
    n = min(int(sample["input_ids"].shape[0]), cfg.max_length)
    ids = sample["input_ids"][:n].to(device)
    features = torch.cat([sample["hidden"][i][:n] for i in cfg.layer_ids], dim=-1).to(device, torch.float32)
    with torch.no_grad():
        target_logits = sup.head.final_norm(sample["final_hidden"][:n].to(device)) @ sup.lm_rows.T
    labels = make_labels(target_logits, sample["loss_mask"][:n].to(device), sample["entropy"][:n].to(device),
                         sample["target_top1"][:n].to(device), sup.in_vocab, p_t)
    logits = model(features, ids, sup.head.embed, n_t)
    return unroll_loss(logits, labels, sup.d2t, cfg.step_weight)


def _check_resume(state: dict[str, Any], cfg: TrainConfig, world: int, out: Path) -> None:
    if state["config"] != cfg.to_dict():
        changed = sorted(k for k, v in cfg.to_dict().items() if state["config"].get(k) != v)
        raise TrainConfigError(f"{out} holds a run with a different config (fields {changed}); "
                               "use a new --out folder or the same settings to resume")
    if state["world_size"] != world:
        raise TrainConfigError(f"{out} was trained with {state['world_size']} process(es), now {world}: "
                               "resume with the same world size (the data order depends on it)")


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    tmp = out / "history.jsonl.tmp"
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    os.replace(tmp, out / "history.jsonl")
