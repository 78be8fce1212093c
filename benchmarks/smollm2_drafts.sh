#!/usr/bin/env bash
# Build the shipped SmolLM2-135M-Instruct drafts (issue 4): data -> capture -> three training runs -> export.
#
# Every step is resumable: run the script again after an interruption and it picks up where it
# stopped (regenerate skips finished conversations, capture continues at its last shard, train
# resumes from its checkpoint). The budget, and why it is this small, is in
# docs/results-smollm2.md (history). Usage: bash benchmarks/smollm2_drafts.sh [WORK_DIR]
set -euo pipefail

W=${1:-artifacts/smollm2-drafts}
R=benchmarks/results/smollm2-drafts   # committed: decontamination report, training logs and times
SHIP=sglang_edsd/drafts
IN=$SHIP/inputs                       # committed: the regenerated data, EDSelect's result
REGEN=$IN/regen-smollm2-sharegpt192.jsonl.gz
T=$(sglang-edsd fetch-smollm2)
EDSELECT=$IN/edselect-smollm2-sharegpt128/edselect.json
mkdir -p "$W" "$R"

# 1. 192 single-turn ShareGPT conversations, decontaminated against every evaluation prompt
sglang-edsd prompts --out "$W/prompts"
sglang-edsd subset --data "$(sglang-edsd fetch-sharegpt)" --out "$W/subset.jsonl" --num 192 --seed 0 \
    --max-user-chars 1200 --max-user-turns 1
sglang-edsd decontaminate --data "$W/subset.jsonl" --prompts "$W/prompts" --out "$W/subset-clean.jsonl"
cp "$W/subset-clean.jsonl.contamination.json" "$R/contamination.json"

# 2. the paper's alignment step: SmolLM2 re-answers (greedy, <= 256 new tokens), batched in-process
if [ -f "$REGEN" ] && [ ! -f "$W/regen.jsonl" ]; then gunzip -c "$REGEN" > "$W/regen.jsonl"; fi
sglang-edsd regenerate --data "$W/subset-clean.jsonl" --out "$W/regen.jsonl" --local "$T" \
    --batch-size 32 --max-tokens 256
gzip -9 -n -c "$W/regen.jsonl" > "$REGEN"

# 3. tokens + loss mask, draft vocabulary (4k: the data holds 3,415 distinct answer ids), capture of EDSelect's layers and EAGLE-3's
sglang-edsd prepare --target "$T" --data "$W/regen.jsonl" --out "$W/tokens.jsonl"
sglang-edsd vocab --data "$W/tokens.jsonl" --target "$T" --size 4096 --out "$W/vocab.safetensors"
sglang-edsd capture --target "$T" --data "$W/tokens.jsonl" --out "$W/capture" \
    --layers-from "$EDSELECT" --with-eagle3-layers

# 4. same data, epochs, seed and optimiser for every run: T=6 epochs, S_max=4 (the served chain
#    depth), gamma=4 (p_t = 20, 16, ..., 0 %), lr 5e-4 (best of 5e-5 / 5e-4 / 2e-3 on a one-epoch probe)
COMMON=(--capture "$W/capture" --draft-vocab "$W/vocab.safetensors" --draft-vocab-size 4096 --epochs 6
        --s-max 4 --gamma 4 --lr 5e-4 --seed 0 --checkpoint-every 50)
sglang-edsd train "${COMMON[@]}" --out "$W/run-edsd" --recipe edsd --layers-from "$EDSELECT"
sglang-edsd train "${COMMON[@]}" --out "$W/run-edarch-plain" --recipe edsd --layers-from "$EDSELECT" \
    --no-step-n --no-mask-p
sglang-edsd train "${COMMON[@]}" --out "$W/run-eagle3" --recipe eagle3

# 5. keep the logs; ship the EDSD draft and the EAGLE-3 baseline in bf16
for run in edsd eagle3 edarch-plain; do
    mkdir -p "$R/run-$run"
    cp "$W/run-$run"/{history.jsonl,curves.png,summary.json} "$R/run-$run/"
    sglang-edsd evaluate --run "$W/run-$run" --capture "$W/capture" --out "$R/run-$run/train-eval.json"
done
sglang-edsd export --run "$W/run-edsd" --out "$SHIP/smollm2-135m-instruct-edsd" --dtype bfloat16 --target "$T"
sglang-edsd export --run "$W/run-eagle3" --out "$SHIP/smollm2-135m-instruct-eagle3" --dtype bfloat16 --target "$T"

# 6. held-out check: 32 other ShareGPT conversations through the same pipeline; per-step agreement
H="$W/heldout"
mkdir -p "$H"
sglang-edsd subset --data "$(sglang-edsd fetch-sharegpt)" --out "$H/subset.jsonl" --num 32 --seed 1 \
    --max-user-chars 1200 --max-user-turns 1 --exclude "$W/subset-clean.jsonl"
sglang-edsd regenerate --data "$H/subset.jsonl" --out "$H/regen.jsonl" --local "$T" --batch-size 32 --max-tokens 256
sglang-edsd prepare --target "$T" --data "$H/regen.jsonl" --out "$H/tokens.jsonl"
sglang-edsd capture --target "$T" --data "$H/tokens.jsonl" --out "$H/capture" --layer-ids 0 1 14 26
for run in edsd edarch-plain eagle3; do
    sglang-edsd evaluate --run "$W/run-$run" --capture "$H/capture" --out "$R/run-$run/heldout-eval.json"
done

# 7. ablation (EDSelect's layers vs SGLang's default mid/high layers, same EDFuse and EDTrain)
mkdir -p "$R/run-edsd-layers14-26"
sglang-edsd train "${COMMON[@]}" --out "$W/run-edsd-layers14-26" --recipe edsd --layer-ids 14 26
sglang-edsd evaluate --run "$W/run-edsd-layers14-26" --capture "$H/capture" \
    --out "$R/run-edsd-layers14-26/heldout-eval.json"
cp "$W/run-edsd-layers14-26"/{history.jsonl,curves.png,summary.json} "$R/run-edsd-layers14-26/"
