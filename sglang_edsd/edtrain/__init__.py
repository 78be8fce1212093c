"""EDTrain: train EDSD drafts (and the matched EAGLE-3 baseline) from an offline capture.

`schedule` (Eq. 5 Mask-p_t, Eq. 6 Step-n_t), `model` (the draft in plain PyTorch, same
weight names as the SGLang model), `objective` (soft CE over the draft vocab per TTT
step), `trainer` (loop, checkpoints, DDP), `recipes` (edsd / eagle3 / ablation flags),
`export` (the folder SGLang serves). Nothing here imports sglang.
"""

from sglang_edsd.edtrain.recipes import RECIPES, TrainConfig, TrainConfigError, recipe
from sglang_edsd.edtrain.schedule import mask_high_entropy, mask_percent, num_steps

__all__ = ["RECIPES", "TrainConfig", "TrainConfigError", "mask_high_entropy", "mask_percent", "num_steps", "recipe"]
