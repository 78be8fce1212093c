"""The CPU serving path against `transformers`' own `generate`: paired, interleaved, repeated.

Configurations: `hf` (transformers `generate`, in this process, same dtype and thread count as
the servers), `none` (SGLang without speculation), EDSD chains (`edsd-cN`, the shipped draft at
depth N), `edsd-adaptive` (SGLang's `--speculative-adaptive` depth, default candidates),
`edsd-stop-cN` (depth N with the entropy stop at the draft's calibrated threshold) and
`edsd-stop-adaptive` (both). Each entropy-stop and adaptive configuration is also compared,
paired, with every static chain in the run.
Every SGLang server is up at once (`--sleep-on-idle`, so an idle one costs nothing) and each
prompt goes to every configuration in an order that rotates with the prompt and the round, so
drift in the machine's speed falls on all of them alike. Speedups are the median over (prompt,
round) pairs of the tokens/s ratio, with a 95% bootstrap interval (`harness.paired_ratio`).
Greedy EDSD output must equal SGLang's own without speculation (float32): the JSON counts
mismatches. `hf` output is compared too, for information only (its kernels differ, so a float32
near-tie may flip). `--concurrency N` sends N prompts at once to a configuration (N threads, the
official client) and times the group from the first send to the last answer; the paired unit is
then the group.

`--phase-times` instead profiles each SGLang configuration alone (SGLANG_EDSD_PHASE_TIMES,
serving/phase_times.py): where a plain step and a round spend their time, and how many draft
steps a round runs, as JSON, markdown and a stacked-bar PNG. `--report-only` redraws the
markdown and PNG of an earlier result JSON. Usage (the committed result):

    python benchmarks/bench_cpu_path.py --out benchmarks/results/cpu-path-smollm2.json
    python benchmarks/bench_cpu_path.py --phase-times --out benchmarks/results/cpu-phases-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import torch
from harness import markdown_table, paired_ratio
from tqdm import tqdm

from sglang_edsd import envs
from sglang_edsd.assets import smollm2_path
from sglang_edsd.client import ask
from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
from sglang_edsd.launcher import cpu_args, launch, launch_all, spec_args
from sglang_edsd.prompts import build_prompt_sets

LEAVES = ("attention", "linear", "lm_head", "rmsnorm", "rope")  # phases that never call one another


def server_env(config: str) -> dict[str, str]:
    """`edsd-stop-*`: the entropy stop at the shipped draft's calibrated threshold (its sidecar)."""
    return {envs.ENTROPY_STOP.name: "draft"} if config.startswith("edsd-stop-") else {}


def is_static(config: str) -> bool:
    return config.startswith("edsd-c")


def server_flags(config: str, dtype: str) -> list[str]:
    flags = cpu_args(dtype)
    draft = str(shipped_draft(SMOLLM2_EDSD))
    if config.startswith("edsd-stop-c"):
        flags += spec_args("EDSD", draft, steps=int(config.removeprefix("edsd-stop-c")))
    elif config.startswith("edsd-c"):
        flags += spec_args("EDSD", draft, steps=int(config.removeprefix("edsd-c")))
    elif config in ("edsd-adaptive", "edsd-stop-adaptive"):  # CPU needs graphs off (docs/serving.md)
        flags += ["--speculative-algorithm", "EDSD", "--speculative-draft-model-path", draft]
        flags += ["--speculative-adaptive", "--disable-cuda-graph"]
    elif config != "none":
        raise SystemExit(
            f"error: unknown configuration {config!r} "
            "(hf, none, edsd-cN, edsd-stop-cN, edsd-adaptive, edsd-stop-adaptive)"
        )
    return flags


def pick_prompts(tasks: list[str], per_task: int, folder: Path) -> list[dict[str, Any]]:
    """The first `per_task` prompts of each task (the held-out evaluation sets, built on first use)."""
    if not any(folder.glob("*.jsonl")):
        build_prompt_sets(folder)
    return harness.select_prompts(str(folder), tasks, per_task)


class HFGenerate:
    """transformers' greedy `generate` on the same chat template SGLang applies."""

    def __init__(self, model: Path, dtype: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()

    def __call__(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        ids = self.tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        seconds = time.perf_counter() - start
        new = out[0, ids.shape[1] :]
        if new.numel() and new[-1].item() == self.tok.eos_token_id:
            new = new[:-1]  # SGLang's completion_tokens count the EOS; its text does not show it
            tokens = new.numel() + 1
        else:
            tokens = new.numel()
        return {"text": self.tok.decode(new, skip_special_tokens=True), "tokens": tokens, "seconds": seconds}


def measure(args: argparse.Namespace, prompts: list[dict[str, Any]], log_dir: Path) -> list[dict[str, Any]]:
    sglang_configs = [c for c in args.configs if c != "hf"]
    specs = {c: (str(smollm2_path()), server_flags(c, args.dtype)) for c in sglang_configs}
    servers = launch_all({c: v for c, v in specs.items() if not server_env(c)}, log_dir)
    for c in (c for c in sglang_configs if server_env(c)):  # their own environment
        servers.update(launch_all({c: specs[c]}, log_dir, env=server_env(c)))
    hf = HFGenerate(smollm2_path(), args.dtype) if "hf" in args.configs else None
    rows = []
    try:
        for s in servers.values():  # warm-up, untimed (the first speculative request compiles)
            ask(s, "Hello!", 8)
        if hf:
            hf("Hello!", 8)
        n = args.concurrency
        groups = [prompts[i : i + n] for i in range(0, len(prompts), n)]
        jobs = [(r, g, group) for r in range(args.rounds) for g, group in enumerate(groups)]
        with ThreadPoolExecutor(n) as pool:
            for rnd, g, group in tqdm(jobs, desc="paired requests", unit="group" if n > 1 else "prompt"):
                shift = (g + rnd) % len(args.configs)
                for config in args.configs[shift:] + args.configs[:shift]:
                    start = time.perf_counter()
                    if config == "hf":
                        answers = [hf(p["prompt"], args.max_tokens) | {"accept": None} for p in group]
                    else:
                        asks = [pool.submit(ask, servers[config], p["prompt"], args.max_tokens) for p in group]
                        answers = [
                            {"text": a.text, "tokens": a.completion_tokens, "seconds": a.seconds}
                            | {"accept": a.accept_length}
                            for a in (f.result() for f in asks)
                        ]
                    wall = time.perf_counter() - start
                    for p, a in zip(group, answers):
                        row = {"round": rnd, "prompt": p["id"], "task": p["task"], "config": config}
                        rows.append(row | a | {"group": g, "group_seconds": wall})
    finally:
        for s in servers.values():
            s.stop()
    return rows


def summarise(rows: list[dict[str, Any]], configs: list[str]) -> dict[str, Any]:
    """Per configuration: tokens/s, tau, paired ratios (per (round, group) unit; a group is one
    prompt at concurrency 1) against hf, none and, for entropy-stop and adaptive configurations,
    every static chain; output mismatches against none, per request."""
    by = {(r["round"], r["prompt"], r["config"]): r for r in rows}
    requests = sorted({(r["round"], r["prompt"]) for r in rows})
    units: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in rows:
        u = units.setdefault((r["round"], r.get("group", r["prompt"]), r["config"]), {"tokens": 0, "seconds": 0.0})
        u["tokens"] += r["tokens"]
        u["seconds"] = r.get("group_seconds", r["seconds"])
    keys = sorted({k[:2] for k in units}, key=str)

    def speed(k: tuple[Any, ...], c: str) -> float:
        return units[k + (c,)]["tokens"] / units[k + (c,)]["seconds"]

    summary: dict[str, Any] = {}
    for c in configs:
        mine = [units[k + (c,)] for k in keys]
        accepts = [by[k + (c,)]["accept"] for k in requests if by[k + (c,)]["accept"] is not None]
        entry: dict[str, Any] = {
            "tokens_per_s": sum(u["tokens"] for u in mine) / sum(u["seconds"] for u in mine),
            "requests": len(requests),
            "units": len(keys),
        }
        if accepts:
            entry["mean_accept_length"] = sum(accepts) / len(accepts)
        bases = [b for b in ("hf", "none") if b in configs and b != c]
        if c.startswith("edsd") and not is_static(c):
            bases += [b for b in configs if is_static(b)]
        for base in bases:
            entry[f"vs_{base}"] = paired_ratio([speed(k, c) / speed(k, base) for k in keys])
        if c != "none" and "none" in configs:
            differ = sum(by[k + (c,)]["text"] != by[k + ("none",)]["text"] for k in requests)
            entry["text_differs_from_none" if c == "hf" else "mismatches_vs_none"] = differ
        summary[c] = entry
    return summary


def ci(x: dict[str, float] | None) -> str:
    return "-" if x is None else f"{x['median']:.3f} [{x['ci95_low']:.3f}, {x['ci95_high']:.3f}]"


def report_speed(summary: dict[str, Any], png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        [c, s["tokens_per_s"], s.get("mean_accept_length"), ci(s.get("vs_hf")), ci(s.get("vs_none"))]
        + [s.get("mismatches_vs_none", s.get("text_differs_from_none"))]
        for c, s in summary.items()
    ]
    header = ["config", "tok/s", "tau", "vs hf generate (95% CI)", "vs SGLang none (95% CI)", "text != none"]
    table = markdown_table(header, rows)
    static = [c for c in summary if is_static(c)]
    dynamic = [c for c in summary if static and f"vs_{static[0]}" in summary[c]]
    if dynamic:
        rows = [[c, *(ci(summary[c][f"vs_{b}"]) for b in static)] for c in dynamic]
        table += "\n\nAgainst the static chains (paired ratio of tokens/s, 95% CI):\n\n"
        table += markdown_table(["config", *(f"vs {b}" for b in static)], rows)
    base = "hf" if any("vs_hf" in s for s in summary.values()) else "none"
    names = [c for c in summary if f"vs_{base}" in summary[c]]
    med = [summary[c][f"vs_{base}"]["median"] for c in names]
    err = [
        [m - summary[c][f"vs_{base}"]["ci95_low"] for c, m in zip(names, med)],
        [summary[c][f"vs_{base}"]["ci95_high"] - m for c, m in zip(names, med)],
    ]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 3.5))
    ax.bar(names, med, yerr=err, capsize=4, color="tab:blue")
    ax.axhline(1.0, color="gray", lw=1)
    label = "transformers generate" if base == "hf" else "SGLang without speculation"
    ax.set_ylabel(f"tokens/s vs {label}\n(median, 95% CI)")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return table


def profile(args: argparse.Namespace, prompts: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Each SGLang configuration alone, with the phase timers on; the last full window's means."""
    result = {}
    for config in [c for c in args.configs if c != "hf"]:
        times = workdir / f"{config}.jsonl"
        env = {envs.PHASE_TIMES.name: str(times), **server_env(config)}
        with launch(smollm2_path(), server_flags(config, args.dtype), workdir / f"{config}.log", env=env) as s:
            ask(s, "Hello!", 8)
            with ThreadPoolExecutor(args.concurrency) as pool:  # keeps `concurrency` requests in flight
                asks = [pool.submit(ask, s, p["prompt"], args.max_tokens) for p in prompts]
                for f in tqdm(asks, desc=f"profile {config}", unit="prompt"):
                    f.result()
        windows = [json.loads(line) for line in times.read_text().splitlines()]
        if not windows:
            raise SystemExit(f"error: {config} wrote no full window of phase times; use more prompts or tokens")
        result[config] = windows
    return result


def phase_split(window: dict[str, Any]) -> dict[str, float]:
    """Milliseconds per unit of the leaf phases (disjoint: none calls another), the rest of the
    unit, and the draft's share (its forwards contain leaf calls too, so it is not stacked)."""
    ms = window["ms_per_unit"]
    total = ms["round"] if window["unit"] == "round" else ms["forward"]
    split = {
        "attention": ms.get("attention_decode", 0.0) + ms.get("attention_extend", 0.0),
        "linear": ms.get("linear", 0.0),
        "lm_head": ms.get("lm_head", 0.0),
        "rmsnorm": ms.get("rmsnorm", 0.0),
        "rope": ms.get("rope", 0.0),
    }
    split["rest"] = total - sum(split.values())
    split["total"] = total
    split["draft"] = ms.get("draft_extend", 0.0) + ms.get("draft_steps", 0.0)
    split["verify"] = ms.get("verify", 0.0)
    return split


def draft_steps_per_round(windows: list[dict[str, Any]]) -> float | None:
    """Draft-step forwards per round over every window: the model forwards that are neither the
    verify nor the draft extend (skipped steps run none)."""
    rounds = [w for w in windows if w["unit"] == "round"]
    if not rounds:
        return None
    calls = [w["calls_per_unit"] for w in rounds]
    steps = sum(w["units"] * (c["forward"] - c["verify"] - c["draft_extend"]) for w, c in zip(rounds, calls))
    return steps / sum(w["units"] for w in rounds)


def report_phases(result: dict[str, Any], png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = {c: phase_split(w[-1]) for c, w in result.items()}
    header = ["config", "unit", "ms per unit", *LEAVES, "rest", "verify", "draft", "attention share"]
    header.append("draft steps per round")
    rows = [
        [c, result[c][-1]["unit"], s["total"], *(s[p] for p in (*LEAVES, "rest", "verify", "draft"))]
        + [f"{s['attention'] / s['total']:.1%}", draft_steps_per_round(result[c])]
        for c, s in splits.items()
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, part in enumerate((*LEAVES, "rest")):
        values = [s[part] for s in splits.values()]
        bottoms = [sum(s[q] for q in (*LEAVES, "rest")[:i]) for s in splits.values()]
        ax.bar(list(splits), values, bottom=bottoms, color="lightgray" if part == "rest" else f"C{i}", label=part)
    ax.set_ylabel("ms per decode step / speculative round")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    note = (
        "\nPhases are inclusive wall times inside the scheduler (attention, linear, lm_head, rmsnorm and rope "
        "count the target's and the draft's calls alike); a round's unit is one EAGLEWorkerV2 round. "
        "Draft steps per round: the draft-step forwards run, over every window (the rest: the last window)."
    )
    return markdown_table(header, rows) + note


def redraw(out: Path) -> None:
    """Markdown and PNG again from a result JSON (the summary recomputed from its requests)."""
    result = json.loads(out.read_text())
    if "windows" in result:
        table = report_phases(result["windows"], out.with_suffix(".png"))
    else:
        result["summary"] = summarise(result["requests"], list(result["summary"]))
        table = report_speed(result["summary"], out.with_suffix(".png"))
        harness.write_json(out, result)
    out.with_suffix(".md").write_text(f"# {out.stem}\n\n`{result['command']}`\n\n{table}\n")
    print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["hf", "none", "edsd-c3", "edsd-c4"])
    p.add_argument("--tasks", nargs="+", default=["mt_bench", "humaneval", "gsm8k", "alpaca", "summarization"])
    p.add_argument("--per-task", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="times each prompt goes to every configuration")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=2, help="torch threads for hf (the servers bind one per core)")
    p.add_argument("--concurrency", type=int, default=1, help="prompts sent at once to a configuration")
    p.add_argument("--phase-times", action="store_true", help="profile each SGLang configuration alone instead")
    p.add_argument("--report-only", action="store_true", help="redraw the markdown and PNG of --out from its JSON")
    p.add_argument("--prompts", type=Path, default=harness.REPO / "artifacts" / "bench-prompts")
    p.add_argument("--out", type=Path, required=True, help="result JSON (markdown and PNG beside it)")
    args = p.parse_args()
    if args.report_only:
        return redraw(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    prompts = pick_prompts(args.tasks, args.per_task, args.prompts)
    meta = {**harness.provenance(args.out.stem), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.phase_times:
            result = profile(args, prompts, Path(tmp))
            split = {c: phase_split(w[-1]) for c, w in result.items()}
            harness.write_json(args.out, {**meta, "windows": result, "split": split})
            table = report_phases(result, args.out.with_suffix(".png"))
        else:
            rows = measure(args, prompts, Path(tmp))
            summary = summarise(rows, args.configs)
            harness.write_json(args.out, {**meta, "summary": summary, "requests": rows})
            table = report_speed(summary, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(f"# {args.out.stem}\n\n`{meta['command']}`\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
