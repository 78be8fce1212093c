"""Run a Hugging Face target over a calibration set and score every eligible layer.

One sequence per forward pass under ``torch.inference_mode``, with the prompt truncated to
``max_len`` tokens; per layer only streaming statistics are kept (see metrics.py), so
memory does not grow with the number of samples beyond the LiDAR class/view buffers
(which fold into d x d matrices once they reach d rows).

For every calibration text i:
* view 0 is the text itself: it feeds Curvature, prompt entropy and dataset entropy;
* views 1..Q-1 are token-augmented copies (augment.py), seeded by (seed, i, view);
* each view's embedding for LiDAR is the mean of its token states.
The first token of every sequence is left out of all metrics: it attends only to itself,
so it carries no prompt information, and LLMs give it massive activations (an attention
sink, Sun et al. 2024, "Massive Activations in Large Language Models") that would
dominate every Gram matrix and mean.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from sglang_edsd.edselect.augment import augment_ids, replacement_pool, view_generator
from sglang_edsd.edselect.errors import EDSelectError
from sglang_edsd.edselect.metrics import (
    CurvatureAccumulator,
    LidarAccumulator,
    ScatterAccumulator,
    matrix_entropy_of_states,
)
from sglang_edsd.edselect.result import EDSelectResult
from sglang_edsd.edselect.select import eligible_layer_ids, select_layers


class _LayerStats:
    """Everything kept for one layer while samples stream through."""

    def __init__(self, dim: int) -> None:
        self.curvature = CurvatureAccumulator()
        self.lidar = LidarAccumulator(dim)
        self.dataset = ScatterAccumulator(dim, centered=False)
        self.entropy_sum = 0.0
        self.entropy_count = 0


def _text_config(model: Any) -> Any:
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


def _encode(tokenizer: Any, text: str, max_len: int) -> torch.Tensor:
    """Token ids of one text, truncated to max_len; a doubled BOS (chat template + tokenizer) is dropped."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return torch.tensor(ids[:max_len], dtype=torch.long)


@dataclass
class LayerStatistics:
    """What one pass over the calibration set leaves behind: streaming stats per SGLang id."""

    num_hidden_layers: int
    layers: dict[int, _LayerStats]
    num_texts: int
    skipped: list[int]
    tokens: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_used(self) -> int:
        return self.num_texts - len(self.skipped)

    def metrics(self, lidar_delta: float = 1e-4, progress: bool = False) -> dict[str, dict[int, float]]:
        """Per-layer Curvature, LiDAR, prompt entropy and dataset entropy, keyed by SGLang id."""
        out: dict[str, dict[int, float]] = {"curvature": {}, "lidar": {}, "prompt_entropy": {}, "dataset_entropy": {}}
        for i, st in tqdm(self.layers.items(), desc="EDSelect metrics", unit="layer", disable=not progress):
            out["curvature"][i] = st.curvature.value()
            out["lidar"][i] = st.lidar.value(lidar_delta)
            out["prompt_entropy"][i] = st.entropy_sum / st.entropy_count
            out["dataset_entropy"][i] = st.dataset.entropy()
        return out


def _check_inputs(texts: Sequence[str], max_len: int, num_views: int) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise EDSelectError("texts must be a list of strings")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise EDSelectError(f"calibration texts must be non-empty strings; bad entries at positions {bad[:10]}")
    if len(texts) < 2:
        raise EDSelectError(f"EDSelect needs at least 2 calibration texts (LiDAR compares prompts), got {len(texts)}")
    if num_views < 2:
        raise EDSelectError(f"num_views must be >= 2 (the text plus at least one augmented view), got {num_views}")
    if max_len < 4:
        raise EDSelectError(f"max_len must be >= 4 tokens, got {max_len}")


def collect_layer_statistics(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_len: int = 512,
    num_views: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    aug_prob: float = 0.1,
    progress: bool = True,
) -> LayerStatistics:
    """Stream the calibration set through the model once; keep per-layer statistics only."""
    _check_inputs(texts, max_len, num_views)
    cfg = _text_config(model)
    num_layers = int(cfg.num_hidden_layers)
    dim = int(cfg.hidden_size)
    layer_ids = eligible_layer_ids(num_layers)
    if len(layer_ids) < 2:
        raise EDSelectError(f"EDSelect needs a target with at least 3 decoder layers, got L={num_layers}")

    vocab = min(len(tokenizer), model.get_input_embeddings().num_embeddings)
    special = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    pool = replacement_pool(vocab, special)
    base = model.base_model  # skip the LM head: only hidden states are needed
    stats = {i: _LayerStats(dim) for i in layer_ids}
    skipped: list[int] = []
    tokens = 0
    model.eval()
    bar = tqdm(total=len(texts) * num_views, desc="EDSelect", unit="fwd", disable=not progress)
    with torch.inference_mode():
        for n, text in enumerate(texts):
            ids = _encode(tokenizer, text, max_len)
            if ids.numel() < 2:
                skipped.append(n)
                bar.update(num_views)
                continue
            tokens += ids.numel()
            pooled = {i: torch.empty(num_views, dim) for i in layer_ids}
            for v in range(num_views):
                view = ids if v == 0 else augment_ids(ids, view_generator(seed, n, v), pool, special, aug_prob)
                out = base(input_ids=view[None].to(device), output_hidden_states=True, use_cache=False)
                hidden = out.hidden_states
                if len(hidden) != num_layers + 1:
                    raise EDSelectError(f"model returned {len(hidden)} hidden states, expected L+1={num_layers + 1}")
                for i in layer_ids:
                    z = hidden[i + 1][0, 1:].float()  # SGLang id i = HF hidden_states[i + 1]
                    pooled[i][v] = z.mean(0).cpu()
                    if v == 0:
                        st = stats[i]
                        st.curvature.update(z)
                        st.entropy_sum += matrix_entropy_of_states(z)
                        st.entropy_count += 1
                del out, hidden
                bar.update(1)
            for i in layer_ids:
                stats[i].lidar.update(pooled[i])
                stats[i].dataset.update(pooled[i][0])
    bar.close()
    result = LayerStatistics(num_layers, stats, len(texts), skipped, tokens)
    if result.num_used < 2:
        raise EDSelectError(
            f"only {result.num_used} calibration text(s) have >= 2 tokens; EDSelect needs at least 2 "
            f"(skipped: {skipped[:10]})"
        )
    result.settings = {
        "model": str(getattr(model.config, "_name_or_path", "") or ""),
        "num_texts": len(texts),
        "num_samples_used": result.num_used,
        "skipped_texts": skipped,
        "curvature_sequences": stats[layer_ids[0]].curvature.count,
        "mean_tokens": tokens / result.num_used,
        "max_len": max_len,
        "num_views": num_views,
        "augmentation": f"token dropout p={aug_prob / 2:g} + random replacement p={aug_prob / 2:g} "
        "(non-special, non-first positions)",
        "aug_prob": aug_prob,
        "seed": seed,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    return result


def run_edselect(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_len: int = 512,
    num_views: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    aug_prob: float = 0.1,
    lidar_delta: float = 1e-4,
    progress: bool = True,
) -> EDSelectResult:
    """Score layers 0..L-2 (SGLang ids) of a HF causal LM on `texts` and pick two.

    `model` must already live on `device` (inputs are sent there). `num_views` counts the
    original text plus num_views - 1 augmented copies per text (LiDAR needs >= 2).
    """
    start = time.perf_counter()
    stats = collect_layer_statistics(
        model, tokenizer, texts, max_len, num_views, seed, device, aug_prob=aug_prob, progress=progress
    )
    metrics = stats.metrics(lidar_delta, progress=progress)
    choice = select_layers(metrics["curvature"], metrics["lidar"], stats.num_hidden_layers)
    settings = {
        **stats.settings,
        "lidar_delta_relative": lidar_delta,
        "elapsed_s": round(time.perf_counter() - start, 3),
    }
    return EDSelectResult.from_metrics(stats.num_hidden_layers, metrics, choice, settings)
