"""What every served benchmark shares: the configurations it compares, their servers, and
result files that carry the full setup (model, drafts, server flags, hardware, SGLang
version, git commit), so a number can always be traced to what produced it.

Servers run one after another (never two sharing the cores while one is measured), with
identical base flags; the drafting shape is part of every configuration's label.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sglang_edsd.assets import smollm2_path
from sglang_edsd.drafts import SMOLLM2_EAGLE3, SMOLLM2_EDSD, shipped_draft
from sglang_edsd.files import write_text_atomic
from sglang_edsd.launcher import Server, cpu_args, launch, spec_args

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServeConfig:
    """One server of a comparison: no speculation, or an algorithm with its draft and shape."""

    name: str
    algorithm: str | None = None
    draft: str | None = None
    steps: int = 4
    topk: int = 1
    draft_tokens: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_flags: tuple[str, ...] = ()

    @property
    def shape(self) -> str:
        if self.algorithm is None:
            return "no speculation"
        if self.topk == 1:
            return f"chain, depth {self.steps}"
        return f"tree, depth {self.steps}, topk {self.topk}, {self.draft_tokens} nodes"

    def flags(self) -> list[str]:
        if self.algorithm is None:
            return list(self.extra_flags)
        return spec_args(self.algorithm, self.draft, self.steps, self.topk, self.draft_tokens) + list(self.extra_flags)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for the target and the base flags of every server: what `model_path` and `base_args` read."""
    p.add_argument("--model", default=None, help="target model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-total-tokens", type=int, default=16384, help="KV-cache tokens (CPU)")
    p.add_argument("--server-args", default="", help="extra flags for every server, one string")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by the served benchmarks: target, drafts, drafting shape, hardware, output."""
    add_server_arguments(p)
    p.add_argument("--edsd-draft", default=None, help="EDSD draft folder (default: the shipped SmolLM2 draft)")
    p.add_argument("--eagle3-draft", default=None, help="EAGLE-3 draft folder (default: the shipped SmolLM2 one)")
    p.add_argument("--steps", type=int, default=4, help="draft depth (default: EDSD's depth-4 chain)")
    p.add_argument("--topk", type=int, default=1, help="> 1 drafts a tree (e.g. the paper's depth 8, topk 10)")
    p.add_argument("--draft-tokens", type=int, default=None, help="tree nodes to verify (trees only)")
    p.add_argument("--tasks", nargs="+", default=None, help="prompt tasks to use (default: every task in --prompts)")
    p.add_argument(
        "--configs",
        nargs="+",
        choices=("none", "eagle3", "edsd"),
        default=["none", "eagle3", "edsd"],
        help="which of the compared servers to run (default all three)",
    )
    p.add_argument(
        "--prompts",
        default=None,
        help="prompt folder or jsonl from `sglang-edsd prompts` (default: the five task sets, built here)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where result files go")
    p.add_argument("--out", default=None, help="result JSON (default: <results-dir>/<name>-<time>.json)")
    p.add_argument("--quick", action="store_true", help="a small subset for a first look (under 15 min on CPU)")


def prompt_records(args: argparse.Namespace, per_task: int) -> list[dict[str, Any]]:
    """The first `per_task` prompts of each task in `--prompts`, else of our five task sets
    (MT-Bench, HumanEval, GSM8K, Alpaca, summarisation), built once under artifacts/."""
    from sglang_edsd.prompts import build_prompt_sets, load_prompts

    folder = Path(args.prompts) if args.prompts else REPO / "artifacts" / "bench-prompts"
    if not args.prompts and not any(folder.glob("*.jsonl")):
        build_prompt_sets(folder)
    records = load_prompts(folder)
    tasks = list(dict.fromkeys(r["task"] for r in records))
    missing = sorted(set(args.tasks or []) - set(tasks))
    if missing:
        raise SystemExit(f"error: --tasks {missing} not in {folder} (it has {tasks})")
    tasks = [t for t in tasks if t in (args.tasks or tasks)]
    return [r for t in tasks for r in [q for q in records if q["task"] == t][:per_task]]


def select_prompts(prompt_dir: str, tasks: list[str], per_task: int) -> list[dict[str, Any]]:
    """The first `per_task` prompts of each task (file order), first user turn only."""
    from sglang_edsd.prompts import load_prompts

    records = load_prompts(prompt_dir)
    chosen = []
    for task in tasks:
        rows = [r for r in records if r["task"] == task][:per_task]
        if len(rows) < per_task:
            raise SystemExit(f"error: task {task!r} has {len(rows)} prompts in {prompt_dir}, {per_task} wanted")
        chosen += [{"id": r["id"], "task": task, "prompt": r["turns"][0]} for r in rows]
    return chosen


def model_path(args: argparse.Namespace) -> str:
    return str(args.model or smollm2_path())


def base_args(args: argparse.Namespace) -> list[str]:
    """Flags every server of the run gets, speculative ones aside."""
    if args.device == "cpu":
        base = cpu_args(args.dtype, max_total_tokens=args.max_total_tokens)
    else:
        base = ["--dtype", args.dtype]
    return base + args.server_args.split()


def standard_configs(
    args: argparse.Namespace, names: tuple[str, ...] = ("none", "eagle3", "edsd")
) -> list[ServeConfig]:
    """No speculation, EAGLE-3 (SGLang's own) and EDSD, in that order, with the same shape; those of
    `names` that `--configs` keeps."""
    shape = {"steps": args.steps, "topk": args.topk, "draft_tokens": args.draft_tokens}
    known = {
        "none": ServeConfig("none"),
        "eagle3": ServeConfig("eagle3", "EAGLE3", str(args.eagle3_draft or shipped_draft(SMOLLM2_EAGLE3)), **shape),
        "edsd": ServeConfig("edsd", "EDSD", str(args.edsd_draft or shipped_draft(SMOLLM2_EDSD)), **shape),
    }
    return [known[n] for n in names if n in args.configs]


@contextmanager
def serve(cfg: ServeConfig, args: argparse.Namespace, log_dir: Path) -> Iterator[Server]:
    """Start one configuration's server, stop it on exit (logs under `log_dir`)."""
    with launch(
        model_path(args), base_args(args) + cfg.flags(), log_path=log_dir / f"{cfg.name}.log", env=cfg.env
    ) as server:
        yield server


class Question(Protocol):
    """One benchmark question (a module): the configurations it compares, how it measures one
    running server, and how it reports. A question runs alone (its script) or with the others
    against the same servers (`bench_all.py`)."""

    NAME: str

    def add_options(self, p: argparse.ArgumentParser) -> None: ...
    def set_defaults(self, args: argparse.Namespace) -> None: ...
    def configs(self, args: argparse.Namespace) -> list[ServeConfig]: ...
    def prepare(self, args: argparse.Namespace, workdir: Path) -> Any: ...
    def measure_on(self, server: Server, cfg: ServeConfig, args: argparse.Namespace, ctx: Any) -> dict[str, Any]: ...
    def report(self, results: dict[str, Any], args: argparse.Namespace, png: Path) -> str: ...


def question_main(q: Question, doc: str) -> None:
    """A question's own command line: its servers one after another, then its report."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_arguments(p)
    q.add_options(p)
    args = p.parse_args()
    q.set_defaults(args)
    run_questions([q], args)


def run_questions(questions: list[Question], args: argparse.Namespace) -> dict[str, Path]:
    """Start each configuration any question needs once, let every question that compares it
    measure it, then write one result file per question; returns {question: JSON path}."""
    wanted = {q.NAME: {c.name for c in q.configs(args)} for q in questions}
    configs = list({c.name: c for q in questions for c in q.configs(args)}.values())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {q.NAME: run_metadata(q.NAME, args, q.configs(args)) for q in questions}
    results: dict[str, dict[str, Any]] = {q.NAME: {} for q in questions}
    paths = {
        q.NAME: Path(args.out) if args.out and len(questions) == 1 else args.results_dir / f"{q.NAME}-{stamp}.json"
        for q in questions
    }
    with tempfile.TemporaryDirectory() as tmp:
        ctx = {q.NAME: q.prepare(args, Path(tmp)) for q in questions}
        for cfg in configs:
            with serve(cfg, args, args.results_dir / f"logs-{stamp}") as server:
                for q in questions:
                    if cfg.name in wanted[q.NAME]:
                        results[q.NAME][cfg.name] = q.measure_on(server, cfg, args, ctx[q.NAME])
                        # Kept as it comes: a later server that fails to start loses nothing measured.
                        write_json(paths[q.NAME], {**meta[q.NAME], "complete": False, "results": results[q.NAME]})
    for q in questions:
        table = q.report(results[q.NAME], args, paths[q.NAME].with_suffix(".png"))
        write_json(
            paths[q.NAME],
            {
                **meta[q.NAME],
                "complete": True,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "results": results[q.NAME],
            },
        )
        paths[q.NAME].with_suffix(".md").write_text(table + "\n")
        print(table)
        print(f"wrote {paths[q.NAME]}")
    return paths


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_commit() -> str:
    """HEAD, marked dirty when the tree has uncommitted changes."""
    return _git("rev-parse", "HEAD") + (" (dirty)" if _git("status", "--porcelain") else "")


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo): hosts of one name can differ 2x in speed."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    import torch

    hw: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
    return hw


def provenance(name: str) -> dict[str, Any]:
    """What produced a result file, for every benchmark script: the command, when, on what
    hardware, with which SGLang and which commit of this repository."""
    import sglang

    return {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware": hardware(),
        "sglang_version": sglang.__version__,
        "git_commit": git_commit(),
    }


def run_metadata(name: str, args: argparse.Namespace, configs: list[ServeConfig]) -> dict[str, Any]:
    """Everything needed to reproduce or question a result."""
    return {
        **provenance(name),
        "model": model_path(args),
        "base_server_args": base_args(args),
        "configs": [{**asdict(c), "shape": c.shape, "flags": c.flags()} for c in configs],
        "quick": args.quick,
    }


def paired_ratio(ratios: list[float], draws: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Median of per-prompt speed ratios with a 95% percentile-bootstrap interval (prompts
    resampled with replacement): the speedup of a paired comparison, where each ratio divides
    two configurations' tokens/s on the same prompt in the same round."""
    import random
    import statistics

    if not ratios:
        raise ValueError("paired_ratio needs at least one per-prompt ratio")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return {
        "median": statistics.median(ratios),
        "ci95_low": medians[int(0.025 * draws)],
        "ci95_high": medians[int(0.975 * draws) - 1],
        "n": len(ratios),
    }


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        if x is None:
            return "-"
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
