"""Every SGLANG_EDSD_* variable the package reads is defined in envs.py and documented."""

from __future__ import annotations

import re
from pathlib import Path

from sglang_edsd import envs

ROOT = Path(__file__).resolve().parent.parent


def test_every_variable_is_defined_once_and_documented() -> None:
    used = {m for f in (ROOT / "sglang_edsd").rglob("*.py") for m in re.findall(r"SGLANG_EDSD_[A-Z_]+", f.read_text())}
    defined = {v.name for v in envs.ALL}
    assert used == defined, (sorted(used - defined), sorted(defined - used))
    literal = [
        f
        for f in (ROOT / "sglang_edsd").rglob("*.py")
        if f.name != "envs.py" and re.search(r'os\.environ(\.get)?\(\s*"SGLANG_EDSD_', f.read_text())
    ]
    assert not literal, f"read through sglang_edsd.envs instead: {literal}"
    docs = (ROOT / "docs" / "serving.md").read_text()
    assert all(f"`{name}`" in docs for name in defined), sorted(n for n in defined if f"`{n}`" not in docs)


def test_switches_read_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(envs.CPU_GEMM.name, "0")
    assert not envs.CPU_GEMM.enabled()
    monkeypatch.delenv(envs.CPU_GEMM.name)
    assert envs.CPU_GEMM.enabled() and envs.RECORD_LIMIT.get() == "1000"
