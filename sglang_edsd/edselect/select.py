"""EDSelect's decision rule: which two target layers feed the draft.

EDSD paper Sec. 3.2: "For both metrics, higher values indicate better-quality
representations ... identify the layer with the highest Curvature and the layer with the
highest LiDAR, and use these two layers as feature sources". We follow that literally
(argmax of each), although Hosseini & Fedorenko 2023 read LOWER curvature as a straighter,
more predictable trajectory. App. A.1 maps the Curvature layer to EAGLE-3's "middle" slot
and the LiDAR layer to its "high" slot.

Layer ids are SGLang's: id i = the output of decoder layer i (HF ``hidden_states[i + 1]``).
Only ids 0..L-2 are eligible because SGLang cannot capture the last layer's output.

Tie rules:
* within one metric, equal maxima resolve to the lowest layer id;
* if both metrics peak at the same layer, that layer is kept (it is best under both) and
  the second layer is the runner-up by LiDAR (the highest LiDAR among the other eligible
  layers, lowest id on equal values). LiDAR is used because it is the metric attached to
  the draft's "high" feature slot and is estimated across prompts rather than per sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sglang_edsd.edselect.errors import EDSelectError


@dataclass(frozen=True)
class LayerChoice:
    """The chosen pair (SGLang ids, ascending) and which metric each came from."""

    layer_ids: tuple[int, int]
    curvature_layer: int
    lidar_layer: int
    tie_broken: bool  # True when both metrics peaked at one layer and the runner-up rule applied

    @property
    def hf_hidden_states_indices(self) -> tuple[int, int]:
        return (self.layer_ids[0] + 1, self.layer_ids[1] + 1)


def eligible_layer_ids(num_hidden_layers: int) -> list[int]:
    """SGLang ids SGLang can capture: 0 .. L-2."""
    return list(range(max(0, num_hidden_layers - 1)))


def _argmax(scores: Mapping[int, float], metric: str, exclude: int | None = None) -> int:
    """Highest score, lowest id on ties; NaN scores never win."""
    best_id, best = None, -math.inf
    for layer in sorted(scores):
        value = scores[layer]
        if layer == exclude or value is None or math.isnan(value):
            continue
        if best_id is None or value > best:
            best_id, best = layer, value
    if best_id is None:
        raise EDSelectError(f"no eligible layer has a finite {metric} score")
    return best_id


def select_layers(curvature: Mapping[int, float], lidar: Mapping[int, float], num_hidden_layers: int) -> LayerChoice:
    """Argmax Curvature and argmax LiDAR over eligible SGLang ids; distinct and ascending."""
    eligible = set(eligible_layer_ids(num_hidden_layers))
    if len(eligible) < 2:
        raise EDSelectError(
            f"EDSelect needs a target with at least 3 decoder layers (two distinct ids in 0..L-2), "
            f"got L={num_hidden_layers}"
        )
    curv = {i: float(v) for i, v in curvature.items() if i in eligible}
    lid = {i: float(v) for i, v in lidar.items() if i in eligible}
    if len(lid) < 2:
        raise EDSelectError(f"need LiDAR scores for at least 2 eligible layers (0..{num_hidden_layers - 2})")
    c_layer = _argmax(curv, "Curvature")
    l_layer = _argmax(lid, "LiDAR")
    tie = c_layer == l_layer
    second = _argmax(lid, "LiDAR", exclude=c_layer) if tie else l_layer
    pair = tuple(sorted((c_layer, second)))
    return LayerChoice(layer_ids=pair, curvature_layer=c_layer, lidar_layer=l_layer, tie_broken=tie)
