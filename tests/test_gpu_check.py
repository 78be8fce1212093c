"""benchmarks/gpu_check.sh end to end in its CPU dry run, so the one GPU run it is prepared
for does not fail on the script itself (about 60 s here)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.long
def test_dry_run_writes_every_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run("--dry-run", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (out / "gpu_check.log").read_text()[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and [s["name"] for s in summary["steps"]] == [
        "env",
        "tests",
        "edtrain-scale",
        "kernels-8b",
        "kernels-70b",
        "edtrain-step",
    ]
    assert json.loads((out / "env.json").read_text())["dry_run"] is True
    suite = ET.parse(out / "pytest.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) >= 10 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    reports = [json.loads(p.read_text()) for p in sorted((out / "kernels").glob("*.json"))]
    assert len(reports) == 2 and all(r["results"] and r["streams"] for r in reports)
    step = json.loads((out / "edtrain-step.json").read_text())
    assert step["steps"] == 2 and step["dtype"] == "bf16" and all(math.isfinite(v) for v in step["losses"])
    assert "=== edtrain-step: rc=0" in (out / "gpu_check.log").read_text()
    scale = json.loads((out / "edtrain-scale.json").read_text())
    assert scale["shape"] == "tiny" and [r["recipe"] for r in scale["recipes"]] == ["eagle3", "edsd"]
    assert not (out / ".scale-work").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_it_refuses_and_points_to_the_dry_run(tmp_path: Path) -> None:
    proc = _run(str(tmp_path / "out"))
    assert proc.returncode == 2 and "use --dry-run" in proc.stderr


def test_usage_error(tmp_path: Path) -> None:
    proc = _run()
    assert proc.returncode == 2 and "usage:" in proc.stderr
