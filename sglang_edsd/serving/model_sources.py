"""The draft and target as SGLang will load them, for EDSD's start-up checks.

`--speculative-draft-model-path` and `--model-path` may be Hugging Face repo ids, which
SGLang only downloads when it loads the models, after server arguments are checked. So the
checks resolve them the way SGLang does: the draft through SGLang's own weight download
helper (`download_weights_from_hf`: a local folder as is, else the local HF cache first,
`HF_HUB_OFFLINE` and `--download-dir` honoured; the weights it fetches are the ones the
loader then finds in the cache), the target through the `ModelConfig` SGLang builds for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sglang_edsd.draft_config import DraftConfigError, TargetInfo

# download_weights_from_hf keeps only the first pattern a remote repo has files for, so the
# draft's config and its weights are fetched by two calls into the same snapshot folder.
_DRAFT_PATTERNS = (["*.json"], ["*.safetensors"])


def local_draft_folder(path: str, revision: str | None, download_dir: str | None) -> Path:
    """A local folder holding the draft's config.json and safetensors weights."""
    if os.path.isdir(path):
        return Path(path)
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError
    from sglang.srt.model_loader.weight_utils import download_weights_from_hf

    folders = set()
    for patterns in _DRAFT_PATTERNS:
        try:
            folders.add(download_weights_from_hf(path, download_dir, list(patterns), revision))
        except (OSError, ValueError, EntryNotFoundError) as e:
            where = (
                "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
                if huggingface_hub.constants.HF_HUB_OFFLINE
                else "not fetchable from the Hugging Face Hub"
            )
            raise DraftConfigError(
                f"draft {path!r} is not a local folder and is {where} ({type(e).__name__}: {e})"
            ) from None
    if len(folders) != 1:
        raise DraftConfigError(
            f"draft {path!r}: its config and weights resolved to different folders {sorted(folders)}"
        )
    return Path(folders.pop())


def target_info(server_args: Any) -> TargetInfo:
    """The target's facts from the HF config SGLang serves it with (local, hub or GGUF)."""
    from sglang.srt.arg_groups.overrides import model_config_of

    hf_config = model_config_of(server_args).hf_config
    return TargetInfo.from_hf_dict(hf_config.to_dict(), source=f"target {server_args.model_path} config")


def target_info_of(model_path: str, revision: str | None = None) -> TargetInfo:
    """The target's facts for `sglang-edsd validate-draft`, resolved by SGLang's own argument
    pipeline for `--model-path` (local folder, hub id through the HF cache, GGUF), as start-up does."""
    from sglang.srt.server_args import prepare_server_args

    args = ["--model-path", model_path, "--device", "cpu"] + (["--revision", revision] if revision else [])
    try:
        server_args = prepare_server_args(args)
        return target_info(server_args)
    except DraftConfigError:
        raise
    except Exception as e:  # SGLang's own errors for a path or id it cannot resolve
        raise DraftConfigError(f"target {model_path!r} could not be resolved ({type(e).__name__}: {e})") from None
