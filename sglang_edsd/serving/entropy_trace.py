"""Opt-in per-position records of EDSD verification: draft entropy, target entropy, accepted.

Why: EDSD is built on the observation that a draft token's acceptance tracks the target's
entropy there (paper Fig. 2); SGLang reports per-request counts only, so checking that the
signal holds for a user's model needs per-position records from the serving path. Off unless
$SGLANG_EDSD_TRACE names a JSONL file in the server's environment; off, SGLang's own worker
runs and nothing is hooked. On, the draft statistics come from the forwards SGLang already
runs (the EASD worker's recording), so tracing adds no draft pass. Chain drafting only.

One line per request per verify: `rid`, `draft_entropy` [S] (the draft's distribution that
proposed d_1..d_S; S is the round's depth, shorter where the entropy stop cut the chain),
`target_entropy` [S] (the target's verify row that scores d_k), and
`accepted` (how many of d_1..d_S the verify accepted; d_{accepted+1} was rejected, later ones
were never judged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sglang_edsd import envs

ENV = envs.TRACE.name


class EntropyTrace:
    """Appends verify records to a JSONL file, one flushed line per request."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("a", encoding="utf-8")

    @classmethod
    def from_env(cls) -> EntropyTrace | None:
        value = envs.TRACE.get()
        return cls(Path(value)) if value else None

    def write(
        self, reqs: list[Any], draft_entropy: torch.Tensor, target_entropy: torch.Tensor, accepted: torch.Tensor
    ) -> None:
        """draft_entropy, target_entropy [B, S]; accepted [B] accepted draft tokens per request."""
        d, t, a = draft_entropy.tolist(), target_entropy.tolist(), accepted.tolist()
        for i, req in enumerate(reqs):
            record = {
                "rid": str(req.rid),
                "draft_entropy": [round(x, 4) for x in d[i]],
                "target_entropy": [round(x, 4) for x in t[i]],
                "accepted": int(a[i]),
            }
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Records of a trace file; a malformed line is an error naming file and line."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            r = json.loads(line)
            steps = len(r["draft_entropy"])
            if len(r["target_entropy"]) != steps or not 0 <= r["accepted"] <= steps:
                raise ValueError("lengths or accepted count out of range")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: not an entropy-trace record ({e})") from None
        records.append(r)
    return records
