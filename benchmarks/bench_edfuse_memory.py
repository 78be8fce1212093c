"""Peak host memory of one EDFuse draft-extend forward on CPU: row chunks against one call.

Each mode runs `EDFuseRunner` once in a fresh process and reports how far peak RSS rose above
RSS before the forward. glibc's mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_), so every
large tensor is mapped and unmapped on its own: left dynamic, glibc raises the threshold after
the first large free and keeps freed chunk buffers in its heap, which measures the allocator
rather than the live tensors. float32, torch's default threads; time is one call on whatever
else the machine runs.

    python benchmarks/bench_edfuse_memory.py --rows 2048 --hidden 2048 --expansion 14336 \
        --out benchmarks/results/edfuse-memory.json     # also writes the .md and .png
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import harness
import torch

from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_streams import CHUNK_BYTES, EDFuseRunner, chunk_bounds

MODES = {"chunked": CHUNK_BYTES, "one_call": 1 << 62}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(mode: str, rows: int, hidden: int, expansion: int) -> dict:
    """One forward in this process: peak RSS growth, the largest E-wide temporary, seconds."""
    torch.manual_seed(0)
    fuse = EDFuse(2 * hidden, hidden, expansion)
    features, embeds = torch.randn(rows, 2 * hidden), torch.randn(rows, hidden)
    runner = EDFuseRunner(fuse, torch.device("cpu"), chunk_bytes=MODES[mode])
    before = _rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        runner(features, embeds)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    chunk_rows = max(stop - start for start, stop in chunk_bounds(rows, runner.max_rows(features.dtype)))
    return {
        "mode": mode,
        "rows": rows,
        "hidden": hidden,
        "expansion": expansion,
        "chunk_rows": chunk_rows,
        "e_wide_temporary_mb": round(chunk_rows * expansion * 4 / 1e6, 1),
        "peak_growth_mb": round((peak - before) / 1e6, 1),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--expansion", type=int, default=14336)
    parser.add_argument("--mode", choices=sorted(MODES), help="measure one mode in this process (internal)")
    parser.add_argument("--out", type=Path, help="write the result JSON here (and .md, .png next to it)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.rows, args.hidden, args.expansion)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    shape = ["--rows", str(args.rows), "--hidden", str(args.hidden), "--expansion", str(args.expansion)]
    results = [
        json.loads(
            subprocess.run(
                [sys.executable, __file__, *shape, "--mode", mode], env=env, check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        for mode in MODES
    ]
    print(json.dumps(results, indent=1))
    if args.out:
        write(args.out, results)


def write(out: Path, results: list[dict]) -> None:
    """JSON with provenance, a markdown table and a bar chart of peak growth per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    harness.write_json(out, {**harness.provenance("edfuse_memory"), "results": results})
    header = ["mode", "rows", "chunk rows", "E-wide temporary (MB)", "peak RSS growth (MB)", "seconds"]
    rows = [
        [r["mode"], r["rows"], r["chunk_rows"], r["e_wide_temporary_mb"], r["peak_growth_mb"], r["seconds"]]
        for r in results
    ]
    out.with_suffix(".md").write_text(harness.markdown_table(header, rows) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([r["mode"] for r in results], [r["peak_growth_mb"] for r in results])
    r0 = results[0]
    ax.set(
        ylabel="peak RSS growth (MB)",
        title=f"EDFuse forward, {r0['rows']} rows, d {r0['hidden']}, m {r0['expansion']}, float32",
    )
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
