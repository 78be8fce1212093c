"""EDTrain: the training loop (paper Sec. 3.2, App. A.8), offline over a capture or online
with the target in the loop.

Per curriculum phase t: Mask-p_t drops the top p_t% highest-entropy loss-bearing tokens of each
sample (Eq. 5) and the training-time-test horizon is n_t (Eq. 6); the `eagle3` recipe and the
ablations switch either off. A phase is a data epoch, or, in a run sized in tokens
(`token_budget`), budget/T tokens of a stream of seeded epochs. Micro-batches pack samples up
to `batch_tokens`; AdamW on fp32 master weights, optional bf16 autocast, gradient clipping, a
checkpoint every `checkpoint_every` optimizer steps (0: at every phase end) and at the end,
written in the background (`checkpoint.CheckpointWriter`), and an optional
held-out evaluation every `eval_every` tokens (the data-scaling curve). Runs alone or under
`torchrun` (DDP; gloo on CPU, NCCL on GPU). No sglang import: this runs on any torch machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from sglang_edsd.draft_config import EDSDDraftConfig, TargetInfo
from sglang_edsd.draft_io import eagle3_layer_ids, parse_expansion
from sglang_edsd.edtrain.checkpoint import CheckpointWriter, host_copy, load_checkpoint
from sglang_edsd.edtrain.export import export_draft, read_draft
from sglang_edsd.edtrain.model import EDSDTrainDraft
from sglang_edsd.edtrain.objective import Labels, make_labels, unroll_loss
from sglang_edsd.edtrain.packing import epoch_batches
from sglang_edsd.edtrain.recipes import TrainConfig, TrainConfigError
from sglang_edsd.edtrain.report import plot_evals, plot_history
from sglang_edsd.edtrain.schedule import lr_factor, mask_percent, num_steps
from sglang_edsd.edtrain.sources import OnlineData, SampleSource, open_source, resolve_precision
from sglang_edsd.edtrain.target_head import TargetHead, load_target_layer
from sglang_edsd.edtrain.vocab import draft_vocab_from_data
from sglang_edsd.files import write_text_atomic


def resolve_layer_ids(cfg: TrainConfig, target: TargetInfo, available: list[int] | None) -> tuple[int, ...]:
    """The recipe's layers: given ids, EAGLE-3's defaults for `fc`, or a capture's only two."""
    ids = tuple(sorted(cfg.layer_ids))
    if not ids and cfg.input_module == "fc":
        ids = eagle3_layer_ids(target)
    if not ids:
        if available is None or len(available) != 2:
            held = (
                "online training runs only the layers it is given"
                if available is None
                else f"the capture holds {list(available)}"
            )
            raise TrainConfigError(
                f"EDSD needs two layer ids: {held}; pass --layer-ids or --layers-from an EDSelect result"
            )
        ids = tuple(available)
    return ids


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
    """What turns a sample into labels, built once per run: the frozen target head,
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
    return {
        "samples": 0,
        "tokens": 0,
        "seconds": 0.0,
        "source_seconds": 0.0,
        "loss_sum": [0.0] * steps,
        "trained": [0] * steps,
        "correct": [0] * steps,
        "scored": [0] * steps,
    }


def add_step_stats(stats: dict[str, Any], step_stats: list) -> None:
    """Add one micro-batch's per-step loss and agreement counts to `stats` (see `new_stats`)."""
    for k, s in enumerate(step_stats):
        stats["loss_sum"][k] += s.loss_sum
        stats["trained"][k] += s.tokens
        stats["correct"][k] += s.correct
        stats["scored"][k] += s.scored


def _reduce_stats(stats: dict[str, Any], world: int) -> dict[str, Any]:
    if world == 1:
        return stats
    keys = ["loss_sum", "trained", "correct", "scored"]
    flat = torch.tensor(
        [stats["samples"], stats["tokens"]] + [float(v) for k in keys for v in stats[k]], dtype=torch.float64
    )
    dist.all_reduce(flat)
    n = len(stats["loss_sum"])
    out = {
        "samples": int(flat[0]),
        "tokens": int(flat[1]),
        "seconds": stats["seconds"],
        "source_seconds": stats["source_seconds"],
    }
    for i, k in enumerate(keys):
        out[k] = flat[2 + i * n : 2 + (i + 1) * n].tolist()
    return out


def _phase_record(
    phase: int, p: float, n: int, stats: dict[str, Any], step_weight: float, tokens_seen: int
) -> dict[str, Any]:
    step_loss = [s / max(t, 1) for s, t in zip(stats["loss_sum"], stats["trained"])]
    return {
        "epoch": phase,
        "mask_percent": p,
        "num_steps": n,
        "samples": stats["samples"],
        "tokens": stats["tokens"],
        "tokens_seen": tokens_seen,
        "seconds": round(stats["seconds"], 2),
        "source_seconds": round(stats["source_seconds"], 2),
        "tokens_per_s": round(stats["tokens"] / max(stats["seconds"], 1e-9), 1),
        "loss": sum(step_weight**k * v for k, v in enumerate(step_loss)),
        "loss_per_step": step_loss,
        "trained_tokens_per_step": [int(t) for t in stats["trained"]],
        "acc_per_step": [c / max(s, 1) for c, s in zip(stats["correct"], stats["scored"])],
    }


def autocast(device: str, precision: str) -> Any:
    """bf16 autocast around the draft's forward (fp32 master weights), or nothing."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def batch_loss(
    model: torch.nn.Module,
    samples: list[dict[str, Any]],
    cfg: TrainConfig,
    sup: Supervision,
    p_t: float,
    n_t: int,
    device: str,
    precision: str = "fp32",
) -> tuple[torch.Tensor, list]:
    """The weighted TTT loss of a packed micro-batch (the sum of its samples' losses) and its
    per-step stats: the one training step of offline and online training, and evaluation."""
    feats, ids, labels, lens = [], [], [], []
    for sample in samples:
        n = min(int(sample["input_ids"].shape[0]), cfg.max_length)
        feats.append(torch.cat([sample["hidden"][i][:n] for i in cfg.layer_ids], dim=-1).to(device, torch.float32))
        ids.append(sample["input_ids"][:n].to(device))
        with torch.no_grad():
            target_logits = sup.head.final_norm(sample["final_hidden"][:n].to(device)) @ sup.lm_rows.T
        labels.append(
            make_labels(
                target_logits,
                sample["loss_mask"][:n].to(device),
                sample["entropy"][:n].to(device),
                sample["target_top1"][:n].to(device),
                sup.in_vocab,
                p_t,
            )
        )
        lens.append(n)
    with autocast(device, precision):
        logits = model(torch.cat(feats), torch.cat(ids), sup.head.embed, n_t, lens)
    return unroll_loss(logits, Labels.cat(labels), sup.d2t, cfg.step_weight)


def agreement(
    model: torch.nn.Module,
    samples: Iterable[dict[str, Any]],
    cfg: TrainConfig,
    sup: Supervision,
    steps: int,
    device: str,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Per-step top-1 agreement and loss on `samples`, no masking, no gradient.

    `tau_proxy` = 1 + a1 + a1*a2 + ... (a chain accepts step k only after steps 1..k-1), a quick
    stand-in for the served accept length of a depth-`steps` chain; `vocab_coverage` is the share
    of scored positions whose target top-1 the draft vocabulary holds (agreement's ceiling).
    """
    stats = new_stats(steps)
    covered = total = count = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for sample in samples:
            add_step_stats(stats, batch_loss(model, [sample], cfg, sup, 0.0, steps, device, precision)[1])
            n = min(int(sample["input_ids"].shape[0]), cfg.max_length)
            scored = sample["loss_mask"][1:n].bool()
            covered += int(sup.in_vocab.cpu()[sample["target_top1"][: n - 1][scored]].sum())
            total += int(scored.sum())
            count += 1
    model.train(was_training)
    agree = [c / max(s, 1) for c, s in zip(stats["correct"], stats["scored"])]
    tau_proxy, chain = 1.0, 1.0
    for a in agree:
        chain *= a
        tau_proxy += chain
    return {
        "samples": count,
        "steps": steps,
        "agreement_per_step": agree,
        "loss_per_step": [s / max(t, 1) for s, t in zip(stats["loss_sum"], stats["trained"])],
        "scored_per_step": stats["scored"],
        "tau_proxy": tau_proxy,
        "vocab_coverage": covered / max(total, 1),
    }


def train(
    cfg: TrainConfig,
    data: str | Path | OnlineData,
    out_dir: str | Path,
    *,
    target_path: str | Path | None = None,
    draft_vocab: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    export: bool = True,
    heldout: str | Path | OnlineData | None = None,
    eval_every: int = 0,
) -> dict[str, Any]:
    """Train (or resume) a draft into `out_dir` from a capture folder or `OnlineData`; returns the
    run summary.

    `stop_after_steps` ends the process's work after that many optimizer steps of this call (a
    controlled interruption: tests and time-boxed sessions resume from it). `heldout` (a capture
    or `OnlineData`) is scored at the start, every `eval_every` tokens and at the end, into
    `evals.jsonl` and `heldout.png`.
    """
    started = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = _setup_distributed(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))
    source, layer_ids = open_source(
        data,
        lambda t, avail: resolve_layer_ids(cfg, t, avail),
        max_length=cfg.max_length,
        device=device,
        precision=cfg.precision,
    )
    cfg = replace(cfg, layer_ids=layer_ids)
    cfg.validate()
    target_path = Path(target_path or source.target_path)
    head = TargetHead.load(target_path)
    state = load_checkpoint(out)
    warm = read_draft(cfg.init_draft) if cfg.init_draft and state is None else None
    if state is not None:
        _check_resume(state, cfg, world, out)
        d2t = state["draft_to_target"]
    elif warm is not None:
        d2t = warm[2]
    else:
        d2t = draft_vocab_from_data(source, cfg.draft_vocab_size, draft_vocab)
    dcfg = EDSDDraftConfig(
        target=source.target,
        layer_ids=cfg.layer_ids,
        expansion_size=parse_expansion(cfg.expansion, source.target),
        draft_vocab_size=cfg.draft_vocab_size,
        token_layernorm=cfg.token_layernorm,
        input_module=cfg.input_module,
    )
    dcfg.check_target(TargetInfo.from_path(target_path))
    sup = Supervision.build(head.to(device), d2t.to(device), source.target.vocab_size)
    model = EDSDTrainDraft(dcfg)
    model.init_from_target(sup.lm_rows, sup.head.norm_weight, cfg.seed)
    if cfg.init_layer >= 0:
        model.init_decoder_from_target(load_target_layer(target_path, cfg.init_layer))
    if warm is not None:
        _check_warm_start(warm[0], dcfg, cfg.init_draft)
        model.load_state_dict(warm[1], strict=True)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    epoch, pos, tokens_seen, history, stats, evals = 0, 0, 0, [], None, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, pos, history, stats = state["epoch"], state["position"], state["history"], state["stats"]
        tokens_seen, evals = state.get("tokens_seen", 0), state.get("evals", [])
        if stats is not None:
            stats.setdefault("source_seconds", 0.0)  # checkpoints written before it was timed
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    lengths = [min(n, cfg.max_length) for n in source.lengths]
    heldout_samples = _heldout_samples(heldout, cfg, device, source) if heldout is not None and rank == 0 else None

    def phase_of(e: int, seen: int) -> int:
        return min(cfg.epochs - 1, seen * cfg.epochs // cfg.token_budget) if cfg.token_budget else e

    def finished(e: int, seen: int) -> bool:
        return seen >= cfg.token_budget if cfg.token_budget else e >= cfg.epochs

    writer = CheckpointWriter(out)

    def snapshot() -> None:
        if rank == 0:
            writer.save(
                {
                    "config": cfg.to_dict(),
                    "draft_config": dcfg.to_hf_dict(),
                    "draft_to_target": d2t,
                    "world_size": world,
                    "epoch": epoch,
                    "position": pos,
                    "tokens_seen": tokens_seen,
                    "stats": stats,
                    "history": history,
                    "evals": evals,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                },
            )

    def evaluate_heldout() -> None:
        if heldout_samples is not None and (not evals or evals[-1]["tokens_seen"] != tokens_seen):
            evals.append(
                {
                    "tokens_seen": tokens_seen,
                    **agreement(model, heldout_samples, cfg, sup, cfg.s_max, device, cfg.precision),
                }
            )
            _write_jsonl(out / "evals.jsonl", evals)
            plot_evals(evals, out / "heldout.png")

    per_step = world * cfg.grad_accum
    batches = epoch_batches(lengths, world, cfg.seed, epoch, cfg.batch_tokens)
    if state is None and cfg.skip_tokens:
        epoch, pos, tokens_seen, batches = _skip(cfg, lengths, world, per_step)
    if not evals:
        evaluate_heldout()
    total = cfg.token_budget or cfg.epochs * sum(lengths)
    loop_started = time.perf_counter()
    bar = tqdm(total=total, initial=min(tokens_seen, total), unit="tok", disable=not progress or rank != 0)
    steps_done = 0
    while not finished(epoch, tokens_seen):
        phase = phase_of(epoch, tokens_seen)
        p_t = mask_percent(phase, cfg.epochs, cfg.gamma) if cfg.mask_p else 0.0
        n_t = num_steps(phase, cfg.epochs, cfg.s_max) if cfg.step_n else cfg.s_max
        bar.set_description(f"phase {phase + 1}/{cfg.epochs} (p={p_t:g}%, n={n_t})")
        stats = stats or new_stats(n_t)
        group = batches[pos : pos + per_step]
        mine = group[rank::world]
        t0 = time.perf_counter()
        for j, batch in enumerate(mine):
            fetch = time.perf_counter()
            samples = source.samples(batch)
            _sync(device)
            stats["source_seconds"] += time.perf_counter() - fetch
            with nullcontext() if j == len(mine) - 1 or world == 1 else ddp.no_sync():
                loss, step_stats = batch_loss(ddp, samples, cfg, sup, p_t, n_t, device, cfg.precision)
                (loss / (len(batch) * len(mine))).backward()
            add_step_stats(stats, step_stats)
            stats["samples"] += len(batch)
            stats["tokens"] += sum(lengths[i] for i in batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(tokens_seen, cfg.skip_tokens, total, cfg.warmup_tokens, cfg.lr_schedule)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats["seconds"] += time.perf_counter() - t0
        step_tokens = sum(lengths[i] for batch in group for i in batch)
        tokens_seen += step_tokens
        steps_done += 1
        pos += len(group)
        bar.update(step_tokens)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if pos >= len(batches):
            epoch, pos = epoch + 1, 0
            batches = epoch_batches(lengths, world, cfg.seed, epoch, cfg.batch_tokens)
        if phase_of(epoch, tokens_seen) != phase or finished(epoch, tokens_seen):
            history.append(_phase_record(phase, p_t, n_t, _reduce_stats(stats, world), cfg.step_weight, tokens_seen))
            stats = None
            if rank == 0:
                _write_jsonl(out / "history.jsonl", history)
                h = history[-1]
                bar.write(
                    f"phase {h['epoch'] + 1}: loss {h['loss']:.4f}, top-1 agreement per step "
                    f"{[round(a, 3) for a in h['acc_per_step']]}, {h['tokens_per_s']} tokens/s"
                )
        if eval_every and tokens_seen // eval_every != (tokens_seen - step_tokens) // eval_every:
            evaluate_heldout()
        if (cfg.checkpoint_every and steps_done % cfg.checkpoint_every == 0) or (
            stats is None and not cfg.checkpoint_every
        ):
            snapshot()
        if stop_after_steps is not None and steps_done >= stop_after_steps and not finished(epoch, tokens_seen):
            snapshot()
            writer.wait()
            bar.close()
            return {"stopped": True, "epoch": epoch, "position": pos, "tokens_seen": tokens_seen, "run_dir": str(out)}
    bar.close()
    loop_wall = time.perf_counter() - loop_started
    evaluate_heldout()
    snapshot()
    writer.wait()
    summary = {
        "stopped": False,
        "run_dir": str(out),
        "history": history,
        "config": cfg.to_dict(),
        "tokens_seen": tokens_seen,
        "train_seconds": round(sum(h["seconds"] for h in history), 2),
        "source_seconds": round(sum(h.get("source_seconds", 0.0) for h in history), 2),
        "checkpoints": writer.count,
        "checkpoint_seconds": round(writer.blocking_seconds, 2),
        "setup_seconds": round(loop_started - started, 2),
        "loop_wall_seconds": round(loop_wall, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if evals:
        summary["heldout"] = evals[-1]
    if rank == 0:
        plot_history(history, out / "curves.png")
        if export:
            summary["draft"] = str(export_draft(out, out / "draft", target_path=target_path))
        (out / "summary.json").write_text(
            json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2) + "\n"
        )
    if world > 1:
        dist.barrier()
    return summary


def _heldout_samples(
    heldout: str | Path | OnlineData, cfg: TrainConfig, device: str, source: SampleSource
) -> list[dict[str, Any]]:
    """Held-out samples with their target features, computed once and kept in memory (an online
    held-out set runs through the training source's target model, not a second copy)."""
    held, _ = open_source(
        heldout,
        lambda t, avail: cfg.layer_ids,
        max_length=cfg.max_length,
        device=device,
        precision=cfg.precision,
        needed_by="the held-out evaluation",
        share_with=source,
    )
    return [host_copy(held[i]) for i in tqdm(range(len(held)), desc="held-out features", unit="sample", leave=False)]


def _sync(device: str) -> None:
    """Wait for queued device work, so a phase's timer holds its own kernels (CUDA only)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _skip(cfg: TrainConfig, lengths: list[int], world: int, per_step: int) -> tuple[int, int, int, list]:
    """(epoch, position, tokens seen, that epoch's batches) once `skip_tokens` of the stream have
    passed, rounded up to an optimizer step: where a run over the same data, seed and batches
    that stopped there continues."""
    epoch, seen = 0, 0
    while True:
        batches = epoch_batches(lengths, world, cfg.seed, epoch, cfg.batch_tokens)
        for pos in range(0, len(batches), per_step):
            if seen >= cfg.skip_tokens:
                return epoch, pos, seen, batches
            seen += sum(lengths[i] for batch in batches[pos : pos + per_step] for i in batch)
        epoch += 1


def _check_warm_start(theirs: EDSDDraftConfig, ours: EDSDDraftConfig, folder: str) -> None:
    a, b = theirs.to_hf_dict(), ours.to_hf_dict()
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if changed:
        raise TrainConfigError(f"--init-draft {folder} is not this run's draft shape: {changed} differ")


def _check_resume(state: dict[str, Any], cfg: TrainConfig, world: int, out: Path) -> None:
    if state["config"] != cfg.to_dict():
        changed = sorted(k for k, v in cfg.to_dict().items() if state["config"].get(k) != v)
        raise TrainConfigError(
            f"{out} holds a run with a different config (fields {changed}); "
            "use a new --out folder or the same settings to resume"
        )
    if state["world_size"] != world:
        raise TrainConfigError(
            f"{out} was trained with {state['world_size']} process(es), now {world}: "
            "resume with the same world size (the data order depends on it)"
        )


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
