"""The draft vocabulary of a run: top-K target tokens on loss-bearing positions of its training
data (or a precomputed `sglang-edsd vocab` file), sorted by target id as SGLang's d2t expects."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from sglang_edsd.data.vocab import count_loss_tokens, select_draft_vocab
from sglang_edsd.edtrain.recipes import TrainConfigError
from sglang_edsd.edtrain.sources import SampleSource


def draft_vocab_from_data(reader: SampleSource, size: int, vocab_file: str | Path | None = None) -> torch.Tensor:
    """draft id -> target id (ascending), from `vocab_file` if given, else counted on the data."""
    if size > reader.target.vocab_size:
        raise TrainConfigError(f"draft_vocab_size {size} exceeds the target vocab {reader.target.vocab_size}")
    if vocab_file is None:
        tokens = (reader.tokens(i) for i in range(len(reader)))
        return select_draft_vocab(count_loss_tokens(tokens, reader.target.vocab_size), size)
    path = Path(vocab_file)
    if not path.exists():
        raise TrainConfigError(f"draft vocabulary file not found: {path}")
    d2t = load_file(str(path)).get("draft_to_target")
    if d2t is None or d2t.ndim != 1 or d2t.numel() != size:
        raise TrainConfigError(f"{path}: expected a 'draft_to_target' tensor of {size} ids (the --draft-vocab-size)")
    if not bool((d2t[1:] > d2t[:-1]).all()) or int(d2t.max()) >= reader.target.vocab_size or int(d2t.min()) < 0:
        raise TrainConfigError(
            f"{path}: draft_to_target must be distinct ascending target ids < {reader.target.vocab_size}"
        )
    return d2t.long()
