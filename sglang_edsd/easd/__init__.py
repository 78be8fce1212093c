"""EASD (entropy-aware speculative decoding): an opt-in, lossy verify rule for EDSD serving.

`rule.py` is the rule and its configuration ($SGLANG_EDSD_EASD), `worker.py` carries the draft's
statistics through SGLang's EAGLE V2 loop and hooks the verify. Off by default: EDSD output is
then exactly the target's.
"""
