"""Online EDTrain on SmolLM2, this tree against an earlier commit: paired, interleaved runs.

Why: a change to the online path (the target once per packed micro-batch, background
checkpoints) should show up as end-to-end training tokens/s on the real target, and one run
each is within this CPU's noise. The earlier commit is checked out into a temporary git
worktree; each round trains once with each tree (alternating which goes first), each run in
its own process alone on the cores, on the same tokens with the same config. The speedup is
the median of the per-round ratios with a bootstrap interval (`harness.paired_ratio`).

    python benchmarks/bench_online_ab.py --before 16ebadf [--rounds 4] [--samples 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import harness

from sglang_edsd.assets import sharegpt_jsonl, smollm2_path
from sglang_edsd.data import build_token_dataset, load_conversations

# One training run, in the tree on PYTHONPATH: prints {"tokens": ..., "seconds": ...}.
RUN = """
import json, sys, time
import sglang_edsd
from sglang_edsd.edtrain import recipe
from sglang_edsd.edtrain.sources import OnlineData
from sglang_edsd.edtrain.trainer import train
tokens, target, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
cfg["layer_ids"] = tuple(cfg["layer_ids"])
start = time.perf_counter()
summary = train(recipe("edsd", **cfg), OnlineData(tokens, target), out, progress=False, export=False)
seconds = time.perf_counter() - start
print(json.dumps({"tokens": summary["tokens_seen"], "seconds": seconds, "package": sglang_edsd.__file__}))
"""


def run_once(tree: Path, tokens: Path, out: Path, cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(tokens), str(smollm2_path()), str(out), json.dumps(cfg)],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"training in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--samples", type=int, default=16, help="ShareGPT conversations (the toolkit benchmark's)")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--s-max", type=int, default=4)
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="online-ab-"))
    before_commit = subprocess.run(
        ["git", "rev-parse", args.before], cwd=harness.REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(work / "before"), before_commit], cwd=harness.REPO, check=True
    )
    trees = {"before": work / "before", "after": harness.REPO}
    convs = [
        c
        for c in islice(load_conversations(sharegpt_jsonl()), 4 * args.samples)
        if any(m["role"] == "assistant" for m in c.messages)
    ][: args.samples]
    tokens = work / "tokens.jsonl"
    build_token_dataset(
        convs, AutoTokenizer.from_pretrained(smollm2_path()), tokens, max_length=2048, skip_invalid=True
    )
    cfg = {
        "layer_ids": [14, 26],
        "epochs": 1,
        "s_max": args.s_max,
        "mask_p": False,
        "checkpoint_every": 0,
        "draft_vocab_size": 4096,
        "max_length": 2048,
        "precision": args.precision,
        "batch_tokens": args.batch_tokens,
    }
    runs: list[dict] = []
    try:
        for r in range(args.rounds):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                got = run_once(trees[name], tokens, work / f"run-{name}-{r}", cfg)
                runs.append({"round": r, "tree": name, **got, "tokens_per_s": got["tokens"] / got["seconds"]})
                print(json.dumps(runs[-1]), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "before")], cwd=harness.REPO, check=False)
    speed = {n: [x["tokens_per_s"] for x in runs if x["tree"] == n] for n in trees}
    ratio = harness.paired_ratio([a / b for a, b in zip(speed["after"], speed["before"])])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = harness.RESULTS / f"online-ab-smollm2-{stamp}"
    result = {
        **harness.provenance("online-ab"),
        "before_commit": before_commit,
        "config": cfg,
        "samples": args.samples,
        "runs": runs,
        "after_over_before": ratio,
    }
    harness.write_json(out.with_suffix(".json"), result)
    rows = [[x["round"], x["tree"], x["tokens"], round(x["seconds"], 1), round(x["tokens_per_s"], 1)] for x in runs]
    out.with_suffix(".md").write_text(
        f"# Online EDTrain on SmolLM2: {harness.git_commit()} against {before_commit}\n\n"
        f"`{result['command']}`; config {json.dumps(cfg)}.\n\n"
        + harness.markdown_table(["round", "tree", "tokens", "seconds", "tokens/s"], rows)
        + f"\n\nafter / before tokens/s, median of per-round ratios: {ratio['median']:.3f} "
        f"(95% bootstrap interval {ratio['ci95_low']:.3f}-{ratio['ci95_high']:.3f}, {ratio['n']} rounds)\n"
    )
    _plot(speed, ratio, out.with_suffix(".png"))
    print(f"wrote {out}.{{json,md,png}}")
    return 0


def _plot(speed: dict[str, list[float]], ratio: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for x, values in enumerate(speed.values()):
        ax.plot([x] * len(values), values, "o", alpha=0.7)
    ax.set_xticks(range(len(speed)), list(speed))
    ax.set(
        ylabel="training tokens/s (end to end)", title=f"Online EDTrain, SmolLM2: after/before {ratio['median']:.2f}x"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
