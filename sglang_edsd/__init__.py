"""sglang-edsd: Entropy-Driven Speculative Decoding (EDSD) drafters for SGLang.

Folders map to the paper's components: `serving/` (the SGLang plugin: spec algorithm and
draft model), `edfuse.py` (EDFuse), `cpu_support/` (CPU ops so SGLang serves without a GPU),
`patches/` (named SGLang patches), `draft_config.py` (the draft format).
"""

__version__ = "0.1.0"
