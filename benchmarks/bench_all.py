"""Every served benchmark question against one server per configuration, one command.

Questions: tau and speedup per task (bench_tau), batch throughput (bench_throughput),
latency under Poisson load (bench_latency), robustness to system prompts
(bench_system_prompts) and the entropy analysis (bench_entropy). Each configuration's
server starts once and every question that compares it measures it in turn; each question
writes its own benchmarks/results/<question>-<time>.{json,md,png}. `--quick` is the subset
for a first look (under 15 minutes on a 2-core CPU with SmolLM2); each question's own
script runs the full size.

    python benchmarks/bench_all.py --quick
    python benchmarks/bench_all.py --device cuda --model <8B target> --edsd-draft <draft> --eagle3-draft <draft>
"""

from __future__ import annotations

import argparse
import time

import bench_entropy
import bench_latency
import bench_system_prompts
import bench_tau
import bench_throughput
import harness

QUESTIONS = {q.NAME: q for q in (bench_tau, bench_throughput, bench_latency, bench_system_prompts, bench_entropy)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_arguments(p)
    p.add_argument("--questions", nargs="+", choices=list(QUESTIONS), default=list(QUESTIONS))
    for q in QUESTIONS.values():
        q.add_options(p)
    args = p.parse_args()
    if args.out:
        p.error("--out names one result file; bench_all writes one per question under benchmarks/results/")
    questions = [QUESTIONS[n] for n in args.questions]
    for q in questions:
        q.set_defaults(args)
    t0 = time.perf_counter()
    paths = harness.run_questions(questions, args)
    print(f"\n{len(paths)} question(s) in {(time.perf_counter() - t0) / 60:.1f} min:")
    for name, path in paths.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    main()
