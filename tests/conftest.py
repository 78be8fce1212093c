"""Shared fixtures: the real SmolLM2 target, drafts, and real SGLang servers.

Servers are module-scoped so at most a couple run at once on the 24 GiB machine; each is
a real `python -m sglang.launch_server` process started through `sglang_edsd.launcher`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sglang_edsd.assets import smollm2_path
from sglang_edsd.draft_io import init_draft


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2_draft(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised EDSD draft for SmolLM2 (8k draft vocab)."""
    return init_draft(smollm2, tmp_path_factory.mktemp("edsd-draft"), draft_vocab_size=8192, seed=0)
