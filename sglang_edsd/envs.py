"""Every `SGLANG_EDSD_*` environment variable, named and documented once (SGLang's `environ.py`
habit): code reads them through these objects, docs/serving.md lists them, and a test checks
that no other `SGLANG_EDSD_*` name appears in the package."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str
    doc: str

    def get(self) -> str:
        return os.environ.get(self.name, self.default).strip()

    def enabled(self) -> bool:
        """For on/off switches: anything but "0" is on."""
        return self.get() != "0"


HOME = EnvVar("SGLANG_EDSD_HOME", "", "cache root for materialised models and data (default ~/.cache/sglang_edsd)")
CPU_SUPPORT = EnvVar(
    "SGLANG_EDSD_CPU_SUPPORT", "", "1 / 0 forces the CPU-support layer on / off (default: on when torch sees no GPU)"
)
CPU_GEMM = EnvVar("SGLANG_EDSD_CPU_GEMM", "1", "0 turns off the few-row GEMM route for SGLang's CPU linear layers")
SIDE_STREAM = EnvVar("SGLANG_EDSD_SIDE_STREAM", "1", "0 runs EDFuse's two halves on one CUDA stream (A/B timing)")
TRITON = EnvVar("SGLANG_EDSD_TRITON", "1", "0 runs EDFuse's elementwise work in eager PyTorch, not Triton (A/B timing)")
EASD = EnvVar("SGLANG_EDSD_EASD", "", "EASD verify rule configuration, inline JSON or a file; unset: EASD off")
ENTROPY_STOP = EnvVar(
    "SGLANG_EDSD_ENTROPY_STOP",
    "",
    "entropy stop: a draft-entropy threshold in nats, or 'draft' for the draft folder's calibrated one; unset: off",
)
TRACE = EnvVar("SGLANG_EDSD_TRACE", "", "JSONL file for the per-verify entropy trace; unset: off")
PHASE_TIMES = EnvVar(
    "SGLANG_EDSD_PHASE_TIMES", "", "JSONL file for per-phase wall time of decode steps / rounds (profiling); unset: off"
)
RECORD_DIR = EnvVar("SGLANG_EDSD_RECORD_DIR", "", "folder for per-forward draft records (tests); unset: off")
RECORD_LIMIT = EnvVar("SGLANG_EDSD_RECORD_LIMIT", "1000", "how many draft forwards SGLANG_EDSD_RECORD_DIR keeps")

ALL = (
    HOME,
    CPU_SUPPORT,
    CPU_GEMM,
    SIDE_STREAM,
    TRITON,
    EASD,
    ENTROPY_STOP,
    TRACE,
    PHASE_TIMES,
    RECORD_DIR,
    RECORD_LIMIT,
)
