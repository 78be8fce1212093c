"""Test helpers around real SGLang servers: concurrent start-up and request helpers."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sglang_edsd.launcher import PortInUseError, Server, start, wait_ready

LOG_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "test-logs"


def start_all(specs: dict[str, tuple[Path, list[str]]]) -> dict[str, Server]:
    """Start several servers at once (start-up is mostly waiting); stop all if one fails.

    Spawned here, in the calling thread (servers die with the thread that spawned them),
    and only waited for in the pool.
    """
    servers, errors = {}, []
    pending = dict(specs)
    for attempt in range(3):  # a port taken before its server bound it is retried on a fresh one
        spawned = {name: start(model, args, LOG_DIR / f"{name}.log") for name, (model, args) in pending.items()}
        with ThreadPoolExecutor(len(spawned)) as pool:
            futures = {name: pool.submit(wait_ready, server) for name, server in spawned.items()}
        retry = {}
        for name, fut in futures.items():
            try:
                servers[name] = fut.result()
            except PortInUseError as e:
                if attempt == 2:
                    errors.append(f"{name}: {e}")
                retry[name] = pending[name]
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(f"{name}: {e}")
        pending = retry
        if not pending:
            break
    if errors:
        for s in servers.values():
            s.stop()
        raise RuntimeError("\n\n".join(errors))
    return servers


def generate(server: Server, payload: dict, timeout: float = 600) -> dict:
    """POST /generate and return the JSON answer."""
    req = urllib.request.Request(f"{server.base_url}/generate", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def greedy_ids(server: Server, input_ids: list[int], max_new_tokens: int, **sampling) -> dict:
    """Greedy generation from token ids; returns {'ids': [...], 'meta': meta_info}."""
    out = generate(server, {"input_ids": input_ids, "return_text_in_logprobs": False,
                            "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens, **sampling}})
    return {"ids": out["output_ids"], "meta": out["meta_info"], "text": out.get("text")}
