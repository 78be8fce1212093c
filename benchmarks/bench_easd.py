"""EASD's effect, paired: accuracy, tau and tokens/s of plain EDSD vs EDSD+EASD on the same prompts.

EASD (sglang_edsd/easd/) trades exactness for not propagating joint draft/target mistakes;
whether that helps is an empirical question. Every configuration answers the same questions
greedily; each answer is scored (the last number in it against the reference), and the
difference in accuracy between each EASD configuration and plain EDSD gets a 95% paired
bootstrap interval over questions, with the discordant counts (questions only one of the two
got right). `--task gsm8k` uses the GSM8K test set; `--task arithmetic` a generated set of
two-number problems, for targets that score near zero on GSM8K (then say so: it is not a
standard benchmark). `--baseline` also serves the target without speculation, which plain
EDSD must equal (greedy, float32) and which gives the target's own accuracy.

    python benchmarks/bench_easd.py --task gsm8k --num 100 --easd sglang_edsd/drafts/inputs/easd/smollm2-edsd-p80.json
"""

from __future__ import annotations

import argparse
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import torch
from tqdm import tqdm

from sglang_edsd.client import ask
from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
from sglang_edsd.easd.rule import ENV as EASD_ENV
from sglang_edsd.easd.rule import EASDConfig

NAME = "easd"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("gsm8k", "arithmetic"), default="gsm8k")
    p.add_argument("--num", type=int, default=None, help="questions (default 100, quick 10)")
    p.add_argument(
        "--easd",
        nargs="+",
        default=None,
        help="EASD configuration JSON file(s), one server each (default: p80 of the first SmolLM2 EDSD draft, "
        "sglang_edsd/drafts/inputs/easd/; calibrate your draft with `sglang-edsd easd-calibrate`)",
    )
    p.add_argument("--answer-len", type=int, default=None, help="max tokens per answer (default 256, quick 128)")
    p.add_argument("--baseline", action="store_true", help="also serve the target without speculation")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="answers in flight at once (default 1). Above 1 only to screen a task's accuracy fast: "
        "batching can change float32 greedy outputs, which would blur the paired comparison",
    )


def set_defaults(args: argparse.Namespace) -> None:
    args.num = args.num or (10 if args.quick else 100)
    args.answer_len = args.answer_len or (128 if args.quick else 256)
    args.easd = args.easd or [str(harness.REPO / "sglang_edsd/drafts/inputs/easd/smollm2-edsd-p80.json")]
    for path in args.easd:
        EASDConfig.from_json(Path(path).read_text(), path)  # fail before any server starts


def configs(args: argparse.Namespace) -> list[harness.ServeConfig]:
    draft = str(args.edsd_draft or shipped_draft(SMOLLM2_EDSD))
    out = [harness.ServeConfig("none")] if args.baseline else []
    if "edsd" not in args.configs:  # `--baseline --configs none`: the target's own accuracy only
        return out
    # EASD reads every draft forward in Python: no CUDA graphs on a GPU, for plain EDSD too (same engine).
    no_graph = ("--disable-cuda-graph",) if args.device == "cuda" else ()
    out.append(harness.ServeConfig("edsd", "EDSD", draft, args.steps, extra_flags=no_graph))
    out += [
        harness.ServeConfig(
            f"easd-{Path(p).stem}",
            "EDSD",
            draft,
            args.steps,
            env={EASD_ENV: str(Path(p).resolve())},
            extra_flags=no_graph,
        )
        for p in args.easd
    ]
    return out


def arithmetic_questions(num: int, seed: int = 0) -> list[dict[str, Any]]:
    """Two-number problems with exact answers: a + b, a - b (two digits), a * b (one by two digits)."""
    rng = random.Random(seed)
    out = []
    for i in range(num):
        op = ("+", "-", "*")[i % 3]
        a, b = (rng.randint(10, 99), rng.randint(10, 99)) if op != "*" else (rng.randint(2, 9), rng.randint(10, 99))
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append({"id": f"arith-{i}", "question": f"What is {a} {op} {b}? Answer with the number.", "answer": answer})
    return out


def prepare(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    if args.task == "arithmetic":
        return arithmetic_questions(args.num)
    records = [r for r in harness.prompt_records(args, per_task=args.num) if r["task"] == "gsm8k"]
    if len(records) < args.num:
        raise SystemExit(f"error: {len(records)} GSM8K questions in the prompt sets, {args.num} wanted")
    return [{"id": r["id"], "question": r["turns"][0], "answer": r["reference"]["final_answer"]} for r in records]


def last_number(text: str) -> float | None:
    found = NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def measure_on(
    server: Any, cfg: harness.ServeConfig, args: argparse.Namespace, questions: list[dict[str, Any]]
) -> dict[str, Any]:
    def score(q: dict[str, Any]) -> dict[str, Any]:
        a = ask(server, q["question"], args.answer_len)
        got = last_number(a.text)
        return {
            "correct": got is not None and abs(got - float(q["answer"])) < 1e-6,
            "text": a.text,
            "completion_tokens": a.completion_tokens,
            "seconds": a.seconds,
            "verify_ct": a.verify_ct,
            "correct_drafts": a.correct_drafts,
        }

    with ThreadPoolExecutor(args.concurrency) as pool:
        answers = list(
            tqdm(pool.map(score, questions), total=len(questions), desc=f"{NAME} {cfg.name}", unit="question")
        )
    return {q["id"]: row for q, row in zip(questions, answers, strict=True)}


def paired_interval(x: list[bool], y: list[bool], reps: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of y - x and its 95% bootstrap interval, resampling questions."""
    d = torch.tensor([float(b) - float(a) for a, b in zip(x, y, strict=True)])
    gen = torch.Generator().manual_seed(seed)
    means = d[torch.randint(len(d), (reps, len(d)), generator=gen)].mean(1)
    return d.mean().item(), means.quantile(0.025).item(), means.quantile(0.975).item()


def report(results: dict[str, Any], args: argparse.Namespace, png: Path) -> str:
    ids = list(next(iter(results.values())))
    plain = [results["edsd"][i]["correct"] for i in ids] if "edsd" in results else None
    rows = []
    for name, by_id in results.items():
        got = [by_id[i]["correct"] for i in ids]
        verify = sum(r["verify_ct"] for r in by_id.values())
        tau = 1 + sum(r["correct_drafts"] for r in by_id.values()) / verify if verify else None
        tps = sum(r["completion_tokens"] for r in by_id.values()) / sum(r["seconds"] for r in by_id.values())
        diff = lo = hi = None
        only_plain = only_this = None
        if plain is not None and name not in ("edsd", "none"):
            diff, lo, hi = paired_interval(plain, got)
            only_plain = sum(a and not b for a, b in zip(plain, got))
            only_this = sum(b and not a for a, b in zip(plain, got))
        same = None if plain is None else sum(by_id[i]["text"] == results["edsd"][i]["text"] for i in ids)
        rows.append(
            [
                name,
                sum(got) / len(got),
                diff,
                None if lo is None else f"[{lo:+.3f}, {hi:+.3f}]",
                only_plain,
                only_this,
                tau,
                tps,
                None if same is None else f"{same}/{len(ids)}",
            ]
        )
    _plot(results, ids, png)
    return (
        f"EASD vs plain EDSD on {args.task} ({len(ids)} questions, greedy, up to {args.answer_len} tokens, "
        f"{args.concurrency} in flight): accuracy, paired difference with 95% bootstrap interval\n\n"
        + harness.markdown_table(
            [
                "config",
                "accuracy",
                "diff vs edsd",
                "95% CI",
                "only edsd right",
                "only this right",
                "tau",
                "tok/s",
                "text = edsd",
            ],
            rows,
        )
    )


def _plot(results: dict[str, Any], ids: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(results)
    ax.bar(names, [sum(results[n][i]["correct"] for i in ids) / len(ids) for n in names])
    ax.set_ylabel("accuracy")
    ax.set_title(f"{len(ids)} questions, greedy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    import sys

    harness.question_main(sys.modules[__name__], __doc__)
