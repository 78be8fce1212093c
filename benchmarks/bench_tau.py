"""Acceptance length (tau) and tokens/s on real SGLang: no speculation, EAGLE-3, EDSD, chain-depth sweep.

Every configuration runs the same prompts through the official `openai` client at batch size
1 (one request at a time), greedy, with identical base server flags (recorded in the JSON).
Servers run one after another so they never share the 2 cores; two warm-up requests per
server are excluded. tau per task is accepted draft tokens + 1 per verify step, summed over the
task's requests (SGLang's `spec_num_correct_drafts` and `spec_verify_ct`). Speedup is output tokens/s
over the same prompts without speculation, measured in the same run. In float32 every
speculative answer must equal the no-speculation one: the JSON counts mismatches.

Each finished request is appended (fsynced) to `<out>.requests.jsonl`; a rerun skips finished
requests, so a killed run resumes; a run that ends gzips the log to `<out>.requests.jsonl.gz`
(a rerun unpacks it first). While `<out>.pause` exists no new request starts, so other work on
the machine can run between timed requests. The JSON records the command, commit, SGLang
version and hardware (`harness.provenance`) next to the model and server flags; the target and
base flags default to SmolLM2-135M-Instruct on CPU in float32. Usage (the first drafts' table):

    sglang-edsd prompts --out artifacts/prompts
    python benchmarks/bench_tau.py --prompts artifacts/prompts --out benchmarks/results/smollm2-tau.json \\
        --edsd-draft sglang_edsd/drafts/smollm2-135m-instruct-edsd \\
        --eagle3-draft sglang_edsd/drafts/smollm2-135m-instruct-eagle3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import harness
from harness import markdown_table
from tqdm import tqdm

from sglang_edsd.client import Answer, ask
from sglang_edsd.data.append_log import append_records, pack, packed, read_append_log, unpack
from sglang_edsd.launcher import launch, spec_args

TASKS = ("mt_bench", "humaneval", "gsm8k", "alpaca", "summarization")
WARMUP = ["Hello!", "Write one sentence about the sea."]


def run_configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """(name, flags, prompt subset) of every server this resumable run starts, baseline first."""
    out = [{"name": "none", "algorithm": None, "draft": None, "steps": 0, "sweep": False}]
    if args.eagle3_draft:
        out.append({"name": "eagle3", "algorithm": "EAGLE3", "draft": args.eagle3_draft, "steps": 4, "sweep": False})
    if args.edsd_draft:
        out.append({"name": "edsd", "algorithm": "EDSD", "draft": args.edsd_draft, "steps": 4, "sweep": False})
        for depth in args.sweep_depths:
            if depth != 4:
                out.append(
                    {
                        "name": f"edsd-depth{depth}",
                        "algorithm": "EDSD",
                        "draft": args.edsd_draft,
                        "steps": depth,
                        "sweep": True,
                    }
                )
    return out


def _done(request_log: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Finished requests of an interrupted run, by (config, prompt id)."""
    rows = read_append_log(request_log, "benchmark record", ("config", "id"))
    return {(r["config"], r["id"]): r for r in rows}


def _wait_while_paused(flag: Path) -> None:
    """Hold the next request while `<out>.pause` exists: other work on the machine (a test run)
    then happens between timed requests, never inside one."""
    while flag.exists():
        time.sleep(5)


def run_config(
    cfg: dict[str, Any],
    args: argparse.Namespace,
    prompts: list[dict[str, Any]],
    request_log: Path,
) -> None:
    done = _done(request_log)
    todo = [p for p in prompts if (cfg["name"], p["id"]) not in done]
    if not todo:
        return
    flags = harness.base_args(args) + (
        spec_args(cfg["algorithm"], cfg["draft"], cfg["steps"]) if cfg["algorithm"] else []
    )
    out_json = Path(args.out)
    log_path = out_json.with_suffix(".logs") / f"{cfg['name']}.log"
    with (
        launch(harness.model_path(args), flags, log_path=log_path) as server,
        request_log.open("a", encoding="utf-8") as out,
    ):
        for prompt in WARMUP:
            ask(server, prompt, 16)
        for p in tqdm(todo, desc=cfg["name"], unit="req"):
            _wait_while_paused(out_json.with_suffix(".pause"))
            answer = _fields(ask(server, p["prompt"], args.max_tokens, temperature=args.temperature))
            row = {"config": cfg["name"], "id": p["id"], "task": p["task"], **answer, "finished_at": time.time()}
            append_records(out, [row])


def _fields(answer: Answer) -> dict[str, Any]:
    return {k: v for k, v in asdict(answer).items() if k != "prompt"}


def _tau(rows: list[dict[str, Any]]) -> float | None:
    """Accepted draft tokens + 1 per verify, over all verifies (docs/conventions.md). SGLang's own
    spec_accept_length divides completion tokens by verifies, which also counts the prefill's token."""
    verify = sum(r["verify_ct"] for r in rows)
    return 1 + sum(r["correct_drafts"] for r in rows) / verify if verify else None


def _tps(rows: list[dict[str, Any]]) -> float:
    return sum(r["completion_tokens"] for r in rows) / sum(r["seconds"] for r in rows)


def _speedup(rows: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> float:
    return _tps(rows) / _tps([base[r["id"]] for r in rows])


def summarize(
    cfgs: list[dict[str, Any]],
    prompts: list[dict[str, Any]],
    done: dict[tuple[str, str], dict[str, Any]],
    tasks: list[str],
) -> dict[str, Any]:
    """Per config: tau per task and its mean, tokens/s and speedup over the prompts it shares with "none"
    (without a "none" config, e.g. `bench_all.py --configs edsd`, speedups and output checks are None)."""
    has_base = any(c["name"] == "none" for c in cfgs)
    base = {p["id"]: done[("none", p["id"])] for p in prompts if ("none", p["id"]) in done}
    result: dict[str, Any] = {}
    for cfg in cfgs:
        # A partial run compares only prompts that both this config and the baseline finished.
        rows = [
            done[(cfg["name"], p["id"])]
            for p in prompts
            if (cfg["name"], p["id"]) in done and (p["id"] in base or not has_base)
        ]
        if not rows:
            continue
        per_task = {}
        for task in tasks:
            t_rows = [r for r in rows if r["task"] == task]
            if not t_rows:
                continue
            per_task[task] = {
                "prompts": len(t_rows),
                "tau": _tau(t_rows),
                "tokens_per_s": _tps(t_rows),
                "speedup": _speedup(t_rows, base) if has_base else None,
                "mean_completion_tokens": sum(r["completion_tokens"] for r in t_rows) / len(t_rows),
            }
        taus = [v["tau"] for v in per_task.values() if v["tau"] is not None]
        result[cfg["name"]] = {
            "algorithm": cfg["algorithm"],
            "draft": cfg["draft"],
            "steps": cfg["steps"],
            "prompts": len(rows),
            "per_task": per_task,
            "mean_tau": sum(taus) / len(taus) if taus else None,
            "tokens_per_s": _tps(rows),
            "speedup": _speedup(rows, base) if has_base else None,
            "outputs_differing_from_none": sum(r["text"] != base[r["id"]]["text"] for r in rows) if has_base else None,
            "client_cpu_share": sum(r["client_cpu_s"] for r in rows) / sum(r["seconds"] for r in rows),
        }
    return result


def _complete(result: dict[str, Any], cfgs: list[dict[str, Any]], n_main: int, n_sweep: int) -> bool:
    return all(
        c["name"] in result and result[c["name"]]["prompts"] == (n_sweep if c["sweep"] else n_main) for c in cfgs
    )


def table(result: dict[str, Any], tasks: list[str]) -> str:
    """Markdown: tau per task and its mean, output tokens/s and speedup over the same prompts."""
    header = (
        ["config", "steps", "prompts"]
        + [f"tau {t}" for t in tasks]
        + ["mean tau", "tok/s", "speedup", "outputs != none"]
    )
    rows = [
        [name, r["steps"], r["prompts"]]
        + [r["per_task"].get(t, {}).get("tau") for t in tasks]
        + [r["mean_tau"], r["tokens_per_s"], r["speedup"], r["outputs_differing_from_none"]]
        for name, r in result.items()
    ]
    return markdown_table(header, rows)


def plot(result: dict[str, Any], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    main = [n for n in ("eagle3", "edsd") if n in result]
    width = 0.8 / max(len(main), 1)
    for k, name in enumerate(main):
        ax1.bar(
            [i + k * width for i in range(len(tasks))],
            [result[name]["per_task"].get(t, {}).get("tau") or 0 for t in tasks],
            width,
            label=name,
        )
    ax1.set_xticks([i + width * (len(main) - 1) / 2 for i in range(len(tasks))], tasks, rotation=20)
    ax1.set_ylabel("tau (depth-4 chain)")
    ax1.legend()
    depths = sorted(
        (r["steps"], r["speedup"]) for n, r in result.items() if n.startswith("edsd") and r["speedup"] is not None
    )
    if depths:  # speedup, not tokens/s: the sweep runs on a subset of the prompts
        ax2.plot([d for d, _ in depths], [s for _, s in depths], "o-", label="EDSD")
    if "eagle3" in result and result["eagle3"]["speedup"] is not None:
        ax2.plot([result["eagle3"]["steps"]], [result["eagle3"]["speedup"]], "s", label="EAGLE-3")
    ax2.set_xticks(range(1, 5))
    ax2.axhline(1.0, color="gray", ls="--", label="no speculation")
    ax2.set_xlabel("chain depth (draft steps)")
    ax2.set_ylabel("speedup in output tokens/s (batch 1)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# The tau question inside `bench_all.py` (see harness.Question): the same measurement, no
# resumable log, every config's server shared with the other questions.
NAME = "tau"


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tau-per-task", type=int, default=None, help="prompts per task (default 8, quick 1)")
    p.add_argument("--tau-output-len", type=int, default=None, help="max tokens per request (default 128, quick 32)")
    p.add_argument("--temperature", type=float, default=0.0, help="see bench_tau.py --help")


def set_defaults(args: argparse.Namespace) -> None:
    args.tau_per_task = args.tau_per_task or (1 if args.quick else 8)
    args.tau_output_len = args.tau_output_len or (32 if args.quick else 128)


def configs(args: argparse.Namespace) -> list[harness.ServeConfig]:
    return harness.standard_configs(args)


def prepare(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    return [
        {"id": r["id"], "task": r["task"], "prompt": r["turns"][0]}
        for r in harness.prompt_records(args, per_task=args.tau_per_task)
    ]


def measure_on(
    server: Any, cfg: harness.ServeConfig, args: argparse.Namespace, prompts: list[dict[str, Any]]
) -> dict[str, Any]:
    for prompt in WARMUP:
        ask(server, prompt, 16)
    return {
        p["id"]: {
            "config": cfg.name,
            "id": p["id"],
            "task": p["task"],
            **_fields(ask(server, p["prompt"], args.tau_output_len, temperature=args.temperature)),
        }
        for p in tqdm(prompts, desc=f"{NAME} {cfg.name}", unit="req")
    }


def report(results: dict[str, Any], args: argparse.Namespace, png: Path) -> str:
    cfgs = [
        {
            "name": c.name,
            "algorithm": c.algorithm,
            "draft": c.draft,
            "steps": c.steps if c.algorithm else 0,
            "sweep": False,
        }
        for c in configs(args)
        if c.name in results
    ]
    rows = [r for by_id in results.values() for r in by_id.values()]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    prompts = list({r["id"]: {"id": r["id"], "task": r["task"]} for r in rows}.values())
    result = summarize(cfgs, prompts, {(r["config"], r["id"]): r for r in rows}, tasks)
    plot(result, tasks, png)
    return (
        f"tau (accepted drafts + 1 per verify) and speedup in output tokens/s over no speculation, batch 1, "
        f"temperature {args.temperature:g}, {args.tau_per_task} prompt(s) per task\n\n" + table(result, tasks)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", required=True, help="folder written by `sglang-edsd prompts`")
    p.add_argument("--out", required=True, help="result JSON (the .md, .png and .requests.jsonl.gz go next to it)")
    p.add_argument("--edsd-draft", help="run EDSD with this draft (and the --sweep-depths); absent: no EDSD rows")
    p.add_argument("--eagle3-draft", help="run SGLang's EAGLE3 with this draft; absent: no EAGLE-3 rows")
    harness.add_server_arguments(p)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--num-per-task", type=int, default=40)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument(
        "--sweep-depths",
        type=int,
        nargs="*",
        default=[1, 2, 3],
        help="extra EDSD chain depths, run on --sweep-per-task prompts of each task",
    )
    p.add_argument("--sweep-per-task", type=int, default=8)
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="1.0 for the paper's T=1 rows; SGLang verifies greedily on CPU, so only GPU numbers "
        "mean anything there (and outputs then differ from no speculation by design)",
    )
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="start no server: table, JSON and PNG of what the request log holds",
    )
    args = p.parse_args()
    meta = harness.provenance(NAME)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    request_log = out.with_suffix(".requests.jsonl")
    prompts = harness.select_prompts(args.prompts, args.tasks, args.num_per_task)
    sweep = [p for task in args.tasks for p in [q for q in prompts if q["task"] == task][: args.sweep_per_task]]
    cfgs = run_configs(args)
    if not args.summarize_only:
        unpack(request_log)
        # Task by task, every main config on a task before the next task: an interrupted run
        # leaves whole tasks compared side by side, then the depth sweep.
        for task in args.tasks:
            for cfg in (c for c in cfgs if not c["sweep"]):
                run_config(cfg, args, [q for q in prompts if q["task"] == task], request_log)
        for cfg in (c for c in cfgs if c["sweep"]):
            run_config(cfg, args, sweep, request_log)
    result = summarize(cfgs, prompts, _done(request_log), args.tasks)
    text = table(result, args.tasks)
    print(text)
    report = {
        **meta,
        "model": harness.model_path(args),
        "base_server_args": harness.base_args(args),
        "max_tokens": args.max_tokens,
        "num_per_task": args.num_per_task,
        "sweep_per_task": args.sweep_per_task,
        "batch_size": 1,
        "temperature": args.temperature,
        "requests": packed(request_log).name,
        "complete": _complete(result, cfgs, len(prompts), len(sweep)),
        "configs": result,
    }
    harness.write_json(out, report)
    out.with_suffix(".md").write_text(text + "\n")
    plot(result, args.tasks, out.with_suffix(".png"))
    if not args.summarize_only:
        pack(request_log)
    print(f"wrote {out} and its .md, .png, .requests.jsonl.gz")


if __name__ == "__main__":
    main()
