"""Test helpers around real SGLang servers: concurrent start-up and request helpers."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from sglang_edsd.cpu_support import should_enable
from sglang_edsd.launcher import Server, launch_all

LOG_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "test-logs"


def require_cpu_servers() -> None:
    """Skip the calling test or fixture where `--device cpu` servers cannot run: they need the
    CPU-support layer, which stays off on a CUDA machine (SGLANG_EDSD_CPU_SUPPORT=1 forces it),
    so `make test` on a GPU machine skips them instead of failing them."""
    if not should_enable():
        pytest.skip(
            "starts `--device cpu` SGLang servers, which need sglang_edsd's CPU-support layer; "
            "it is off here (a CUDA machine, or SGLANG_EDSD_CPU_SUPPORT=0; =1 forces it on)"
        )


def start_all(specs: dict[str, tuple[Path, list[str]]]) -> dict[str, Server]:
    """Start several servers at once, logs under artifacts/test-logs (see `launch_all`)."""
    if any(_on_cpu(args) for _, args in specs.values()):
        require_cpu_servers()
    return launch_all(specs, LOG_DIR)


def _on_cpu(args: list[str]) -> bool:
    return any(a == "--device" and b == "cpu" for a, b in zip(args, args[1:]))


def generate(server: Server, payload: dict, timeout: float = 600) -> dict:
    """POST /generate and return the JSON answer."""
    req = urllib.request.Request(
        f"{server.base_url}/generate", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def greedy_ids(server: Server, input_ids: list[int], max_new_tokens: int, **sampling) -> dict:
    """Greedy generation from token ids; returns {'ids': [...], 'meta': meta_info}."""
    out = generate(
        server,
        {
            "input_ids": input_ids,
            "return_text_in_logprobs": False,
            "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens, **sampling},
        },
    )
    return {"ids": out["output_ids"], "meta": out["meta_info"], "text": out.get("text")}
