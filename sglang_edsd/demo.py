"""The README's main job: SmolLM2-135M-Instruct on this CPU, with and without EDSD.

Starts a real SGLang server without speculation, sends chat requests through the official
`openai` client, stops it, then does the same with EDSD, and prints per-prompt output
tokens/s and EDSD's accept length (from SGLang's `sglext.spec_tokens_details`). The two
servers run one after the other so they do not share the 2 cores. One warm-up request per
server is excluded from the timings. Both run in float32, so "same output" must hold
exactly (in bf16 the verify and decode paths may round differently and flip a tie).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from sglang_edsd.assets import cache_dir, smollm2_path
from sglang_edsd.client import Answer, ask
from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
from sglang_edsd.errors import EDSDError
from sglang_edsd.launcher import cpu_args, edsd_args, launch

DEMO_PROMPTS = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a short Python function that reverses a string.",
    "Give me three tips for a good night's sleep.",
    "What is 17 times 23? Show your work.",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "Name the planets of the solar system in order.",
    "How do I make a cup of green tea?",
]

# The shipped draft's fastest chain depth on this CPU (benchmarks/results/smollm2-3m-tau.json:
# 1.25x no speculation at depth 3, 1.21x at 2, 1.10x at 1, 0.82x at 4); `--steps 4` serves the
# paper's chain.
DEMO_STEPS = 3


def default_draft() -> Path:
    """The trained SmolLM2 EDSD draft shipped in the package (benchmarks/smollm2_online_drafts.sh)."""
    return shipped_draft(SMOLLM2_EDSD)


def _serve_and_ask(
    name: str, model: Path, args: list[str], prompts: list[str], max_tokens: int, log_dir: Path
) -> tuple[list[Answer], float]:
    print(f"\n[{name}] starting SGLang: {' '.join(args)}", flush=True)
    with launch(model, args, log_path=log_dir / f"{name}.log") as server:
        print(f"[{name}] ready in {server.started_s:.0f}s; warm-up request (not timed)", flush=True)
        ask(server, "Hello!", 8)
        answers = [ask(server, p, max_tokens) for p in tqdm(prompts, desc=name, unit="req")]
        return answers, server.started_s


def run_demo(num_prompts: int = 4, max_tokens: int = 64, draft: str | None = None, steps: int = DEMO_STEPS) -> dict:
    """Serve, ask, compare; prints a table and writes demo-results.json next to the logs."""
    if steps < 1:
        raise EDSDError(f"steps (the EDSD chain depth) must be >= 1, got {steps}")
    model = smollm2_path()
    draft_path = Path(draft) if draft else default_draft()
    prompts = DEMO_PROMPTS[:num_prompts]
    log_dir = cache_dir() / "demo-logs"
    base = cpu_args("float32", max_total_tokens=16384)
    plain, plain_start = _serve_and_ask("no-spec", model, base, prompts, max_tokens, log_dir)
    spec = edsd_args(draft_path, steps)
    edsd, edsd_start = _serve_and_ask(f"edsd-depth{steps}", model, base + spec, prompts, max_tokens, log_dir)

    print(f"\n{'prompt':42s} {'tok':>4s} {'no-spec tok/s':>13s} {'EDSD tok/s':>10s} {'accept len':>10s} same")
    for p, e in zip(plain, edsd):
        print(
            f"{p.prompt[:42]:42s} {e.completion_tokens:4d} {p.tokens_per_s:13.2f} {e.tokens_per_s:10.2f} "
            f"{(e.accept_length or 0):10.2f} {'yes' if p.text == e.text else 'no'}"
        )
    plain_tps = sum(a.completion_tokens for a in plain) / sum(a.seconds for a in plain)
    edsd_tps = sum(a.completion_tokens for a in edsd) / sum(a.seconds for a in edsd)
    accepts = [a.accept_length for a in edsd if a.accept_length is not None]
    summary = {
        "draft": str(draft_path),
        "dtype": "float32",
        "steps": steps,
        "server_args": base + spec,
        "no_spec_tokens_per_s": plain_tps,
        "edsd_tokens_per_s": edsd_tps,
        "speedup": edsd_tps / plain_tps,
        "mean_accept_length": sum(accepts) / len(accepts) if accepts else None,
        "same_output": sum(p.text == e.text for p, e in zip(plain, edsd)),
        "prompts": len(prompts),
        "server_start_s": {"no-spec": plain_start, "edsd": edsd_start},
        "answers": {"no-spec": [asdict(a) for a in plain], "edsd": [asdict(a) for a in edsd]},
    }
    accept = summary["mean_accept_length"]
    print(
        f"\nno-spec {plain_tps:.2f} tok/s | EDSD depth {steps} {edsd_tps:.2f} tok/s ({summary['speedup']:.2f}x) | "
        f"mean accept length {'-' if accept is None else f'{accept:.2f}'} | identical outputs "
        f"{summary['same_output']}/{len(prompts)}"
    )
    (log_dir / "demo-results.json").write_text(json.dumps(summary, indent=2))
    print(f"details: {log_dir / 'demo-results.json'}; server logs in {log_dir}")
    return summary
