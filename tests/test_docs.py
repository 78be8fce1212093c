"""The README, docs and results index point at files that exist: a moved or removed file must
take its mentions with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks/results/README.md", ROOT / "sglang_edsd/drafts/inputs/README.md"]
    + list((ROOT / "docs").glob("*.md"))
    + list((ROOT / "sglang_edsd/drafts").glob("*/README.md"))
)
# A repository path in backticks: starts at a top-level folder, may use {a,b} and globs; one with a
# placeholder (<run>, $T) or after "commit:" (a file in git history) is not checked.
REPO_PATH = re.compile(r"(?<![\w/.:<$-])((?:benchmarks|sglang_edsd|tests|docs)/[\w./*{},-]*+)(?![<$])")


def _expand(path: str) -> list[str]:
    """`a.{json,png}` -> `a.json`, `a.png`."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[: m.start()] + alt + path[m.end() :])]


def _missing(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith("http")]
    missing = [t for t in links if t and not (doc.parent / t).exists()]
    for span in re.findall(r"`([^`]+)`", text):
        for path in REPO_PATH.findall(span):
            missing += [p for p in _expand(path.rstrip(".,")) if not any(ROOT.glob(p.rstrip("/")))]
    if doc.name == "README.md" and doc.parent.name == "results":  # the index: files relative to it
        rows = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| ") and " | " in line]
        for span in re.findall(r"`([^`]+)`", "".join(rows[2:])):
            if not REPO_PATH.match(span):
                missing += [p for p in _expand(span) if not any(doc.parent.glob(p.rstrip("/")))]
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_link_and_repository_path_exists(doc: Path):
    assert _missing(doc) == []
