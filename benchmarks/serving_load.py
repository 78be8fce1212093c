"""Load from SGLang's own generator (`python -m sglang.benchmark.serving`) against a running server.

Why SGLang's tool: its Poisson arrivals, concurrency cap, TTFT/latency percentiles and
output-throughput accounting are what SGLang users already read; we only feed it our prompt
sets (its `custom` dataset format), fix the output length (it ignores EOS by default, so
every configuration decodes the same number of tokens) and account for its CPU use, since
on a small machine the client shares cores with the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

from sglang_edsd.launcher import Server

KEPT = (
    "completed",
    "duration",
    "total_output_tokens",
    "output_throughput",
    "request_throughput",
    "mean_e2e_latency_ms",
    "median_e2e_latency_ms",
    "p99_e2e_latency_ms",
    "mean_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "accept_length",
    "concurrency",
)


def write_dataset(records: list[dict[str, Any]], path: Path) -> Path:
    """Prompt records (`sglang-edsd prompts`) as `custom` conversations: the first user turn, and
    the reference answer where the source has one (bench_serving needs a second turn; with a
    fixed output length it does not use it)."""
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            ref = r.get("reference")
            answer = ref.get("answer") if isinstance(ref, dict) else ref
            turns = [
                {"role": "user", "content": r["turns"][0]},
                {"role": "assistant", "content": str(answer or "no reference answer")},
            ]
            f.write(json.dumps({"conversations": turns}) + "\n")
    return path


def run_load(
    server: Server,
    model: str,
    dataset: Path,
    num_prompts: int,
    output_len: int,
    *,
    max_concurrency: int | None = None,
    request_rate: float = math.inf,
    seed: int = 42,
) -> dict[str, Any]:
    """One bench_serving run, in this process through its own command line (so its start-up is
    paid once and its CPU time can be measured); its summary metrics plus the client's CPU
    seconds and their share of the run's wall time (tokenizer loading and warm-up included)."""
    from sglang.benchmark.serving import cli_main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.jsonl"
        argv = [
            "sglang.benchmark.serving",
            "--backend",
            "sglang-oai-chat",
            "--base-url",
            server.base_url,
            "--model",
            model,
            "--tokenizer",
            model,
            "--dataset-name",
            "custom",
            "--dataset-path",
            str(dataset),
            "--num-prompts",
            str(num_prompts),
            "--sharegpt-output-len",
            str(output_len),
            "--request-rate",
            str(request_rate),
            "--seed",
            str(seed),
            "--output-file",
            str(out),
            "--disable-tqdm",
        ]
        if max_concurrency is not None:
            argv += ["--max-concurrency", str(max_concurrency)]
        cpu0, t0 = time.process_time(), time.perf_counter()
        with patch.object(sys, "argv", argv), contextlib.redirect_stdout(io.StringIO()) as printed:
            cli_main()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        if not out.exists():
            raise RuntimeError(f"sglang.benchmark.serving wrote no result:\n{printed.getvalue()[-3000:]}")
        summary = json.loads(out.read_text().splitlines()[-1])
    if summary["completed"] != num_prompts:
        raise RuntimeError(f"only {summary['completed']} of {num_prompts} requests completed; see {server.log_path}")
    row = {k: summary.get(k) for k in KEPT}
    row.update(
        num_prompts=num_prompts,
        output_len=output_len,
        max_concurrency=max_concurrency,
        request_rate=None if math.isinf(request_rate) else request_rate,
        client_cpu_s=cpu,
        client_wall_s=wall,
        client_cpu_share=cpu / wall,
    )
    return row
