#!/usr/bin/env bash
# Build the SmolLM2-135M-Instruct drafts with online EDTrain (issue 17): data -> probes -> two matched runs.
#
# Every step resumes: data files are only built when missing and training runs continue from
# their checkpoint, so run the script again after an interruption. Run folders live outside the
# repo (W); what the project keeps (curves, histories, summaries, evals, drafts) is copied to R
# and sglang_edsd/drafts. Usage: bash benchmarks/smollm2_online_drafts.sh [STAGE ...]
# Stages: data probes main (default: all three, in order); extend (continue the shipped drafts).
set -euo pipefail

W=${W:-$HOME/.cache/sglang_edsd/runs/online}
R=benchmarks/results/smollm2-online
IN=sglang_edsd/drafts/inputs   # committed inputs: the first drafts' regenerated data, EDSelect's result
T=$(sglang-edsd fetch-smollm2)
S=$(sglang-edsd fetch-sharegpt)
mkdir -p "$W" "$R"
stages=${*:-data probes main}

data() {
  # Evaluation prompts of all five tasks: every training or held-out conversation that contains
  # one is dropped (llamafactory's files and the other evaluation sets are never trained on).
  [ -d "$W/prompts" ] || sglang-edsd prompts --out "$W/prompts"
  # Held out: 48 single-turn conversations re-answered by SmolLM2 itself (greedy), i.e. text like
  # what the draft sees when served. Never trained on; layers, data and settings are chosen on it.
  if [ ! -f "$W/heldout-tokens.jsonl" ]; then
    sglang-edsd subset --data "$S" --out "$W/heldout.jsonl" --num 48 --seed 1 --max-user-chars 1200 --max-user-turns 1
    sglang-edsd decontaminate --data "$W/heldout.jsonl" --prompts "$W/prompts" --out "$W/heldout-clean.jsonl"
    sglang-edsd regenerate --data "$W/heldout-clean.jsonl" --out "$W/heldout-regen.jsonl" --local "$T" \
        --batch-size 16 --max-tokens 192
    sglang-edsd prepare --target "$T" --data "$W/heldout-regen.jsonl" --out "$W/heldout-tokens.jsonl" --max-length 1024
  fi
  # Training: ShareGPT conversations with their original answers (online training labels every
  # position with the target's own distribution), up to 2 user turns, decontaminated, minus held out.
  if [ ! -f "$W/train-tokens.jsonl" ]; then
    sglang-edsd subset --data "$S" --out "$W/train.jsonl" --num 9000 --seed 0 --max-user-turns 2 \
        --exclude "$W/heldout.jsonl"
    sglang-edsd decontaminate --data "$W/train.jsonl" --prompts "$W/prompts" --out "$W/train-clean.jsonl"
    sglang-edsd prepare --target "$T" --data "$W/train-clean.jsonl" --out "$W/train-tokens.jsonl" \
        --max-length 1024 --skip-invalid
  fi
  # Regenerated vs original answers at equal tokens: the 192 conversations the first drafts were
  # trained on, as SmolLM2 re-answered them (committed) and with their own ShareGPT answers;
  # both keep only the conversations in both files and none of the held-out ones.
  if [ ! -f "$W/orig192-tokens.jsonl" ]; then
    gunzip -c "$IN/regen-smollm2-sharegpt192.jsonl.gz" > "$W/regen192-all.jsonl"
    sglang-edsd subset --data "$S" --out "$W/orig192-all.jsonl" --num 192 --seed 0 --max-user-chars 1200 \
        --max-user-turns 1
    python - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
read = lambda name: [json.loads(x) for x in (w / name).read_text().splitlines() if x.strip()]
held = {r["id"] for r in read("heldout.jsonl")}
regen, orig = read("regen192-all.jsonl"), read("orig192-all.jsonl")
keep = ({r["id"] for r in regen} & {r["id"] for r in orig}) - held
for name, rows in (("regen192.jsonl", regen), ("orig192.jsonl", orig)):
    (w / name).write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in keep))
print(f"regenerated vs original: {len(keep)} conversations in both, none held out")
PY
    sglang-edsd prepare --target "$T" --data "$W/regen192.jsonl" --out "$W/regen192-tokens.jsonl" --max-length 1024
    sglang-edsd prepare --target "$T" --data "$W/orig192.jsonl" --out "$W/orig192-tokens.jsonl" --max-length 1024
  fi
  cp "$W/train-clean.jsonl.contamination.json" "$R/train-contamination.json"
  cp "$W/heldout-clean.jsonl.contamination.json" "$R/heldout-contamination.json"
  gzip -9 -n -c "$W/heldout-regen.jsonl" > "$R/heldout-regen.jsonl.gz"
}

PROBE=(--heldout "$W/heldout-tokens.jsonl" --work "$W/probes" --budget "${PROBE_TOKENS:-30000}" --batch-tokens 512
       --lr 1e-3 --no-progress)
probes() {
  # Which layers (EDSelect's pick, the opposite curvature reading, deep pairs; single layers for
  # the metrics' Spearman correlation), which init, which answers: all scored on held-out data.
  # REUSE=1 reads back the committed layer probes trained with these settings instead of retraining.
  python benchmarks/probe_drafts.py layers --data "$W/train-tokens.jsonl" "${PROBE[@]}" \
      --edselect "$IN/edselect-smollm2-sharegpt128/edselect.json" --deep-pairs 14,26 24,28 \
      ${REUSE:+--reuse "$R/probes-layers.json"}
  python benchmarks/probe_drafts.py init --data "$W/train-tokens.jsonl" "${PROBE[@]}" --layer-ids ${PAIR:-14 26}
  python benchmarks/probe_drafts.py data --data "$W/orig192-tokens.jsonl" --regen "$W/regen192-tokens.jsonl" \
      "${PROBE[@]}" --layer-ids ${PAIR:-14 26}
}

main() {
  # The shipped drafts: EDSD on the probes' best pair and the matched EAGLE-3 baseline, same data
  # order, token budget, batches, optimiser and seed; held-out agreement every 125 k tokens.
  local common=(--online --data "$W/train-tokens.jsonl" --target "$T" --heldout "$W/heldout-tokens.jsonl"
                --eval-every "${EVAL_EVERY:-125000}" --token-budget "${TOKENS:-2000000}" --batch-tokens 1024 --max-length 1024
                --epochs 4 --s-max 4 --gamma 4 --lr "${LR:-5e-4}" --draft-vocab-size 8192 --seed 0
                --checkpoint-every 25 --no-progress)
  sglang-edsd train "${common[@]}" --recipe edsd --layer-ids ${PAIR:-14 26} --out "$W/run-edsd"
  sglang-edsd train "${common[@]}" --recipe eagle3 --out "$W/run-eagle3"
  for run in edsd eagle3; do
    mkdir -p "$R/run-$run"
    cp "$W/run-$run"/{history.jsonl,evals.jsonl,curves.png,heldout.png,summary.json} "$R/run-$run/"
  done
  sglang-edsd export --run "$W/run-edsd" --out sglang_edsd/drafts/smollm2-135m-instruct-edsd --dtype bfloat16 --target "$T"
  sglang-edsd export --run "$W/run-eagle3" --out sglang_edsd/drafts/smollm2-135m-instruct-eagle3 --dtype bfloat16 --target "$T"
}

extend() {
  # Continue both shipped drafts (trained to SKIP tokens by `main`) on the same data stream from
  # where `main` stopped, to TOKENS in all: each from its exported weights and vocabulary with a
  # fresh optimiser, Mask-p off and the full TTT depth (the curricula's last phase), 20 k tokens of
  # warmup, then cosine decay to lr/10. Both recipes get the same steps, order and seed, and run
  # side by side on one core each, so a session that ends early leaves them at equal tokens.
  # Each extension is a leg named LEG (ext, ext2, ...): its own run folder and committed curves.
  local skip=${SKIP:-800971} budget=${TOKENS:-2000000} leg=${LEG:-ext}
  local common=(--online --data "$W/train-tokens.jsonl" --target "$T" --heldout "$W/heldout-tokens.jsonl"
                --eval-every "${EVAL_EVERY:-100000}" --token-budget "$budget" --skip-tokens "$skip"
                --batch-tokens 1024 --max-length 1024 --epochs 1 --s-max 4 --lr "${LR:-5e-4}"
                --lr-schedule cosine --warmup-tokens 20000 --draft-vocab-size 8192 --seed 0
                --checkpoint-every 25 --no-progress)
  for run in edsd eagle3; do
    [ -d "$W/init-$run-$leg" ] || cp -r "sglang_edsd/drafts/smollm2-135m-instruct-$run" "$W/init-$run-$leg"
  done
  OMP_NUM_THREADS=1 sglang-edsd train "${common[@]}" --recipe edsd --layer-ids ${PAIR:-14 26} \
      --init-draft "$W/init-edsd-$leg" --out "$W/run-edsd-$leg" > "$W/run-edsd-$leg.log" 2>&1 &
  local edsd=$!
  OMP_NUM_THREADS=1 sglang-edsd train "${common[@]}" --recipe eagle3 \
      --init-draft "$W/init-eagle3-$leg" --out "$W/run-eagle3-$leg" > "$W/run-eagle3-$leg.log" 2>&1 &
  local eagle3=$!
  wait "$edsd"
  wait "$eagle3"
  for run in edsd eagle3; do
    mkdir -p "$R/run-$run-$leg"
    cp "$W/run-$run-$leg"/{history.jsonl,evals.jsonl,curves.png,heldout.png,summary.json} "$R/run-$run-$leg/"
    sglang-edsd export --run "$W/run-$run-$leg" --out "sglang_edsd/drafts/smollm2-135m-instruct-$run" \
        --dtype bfloat16 --target "$T"
  done
  # The data-scaling evidence: both recipes' held-out curves over the first run and every leg, in
  # the order of tokens seen (each leg's first eval repeats the previous leg's last).
  python - "$R" <<'PY'
import json, sys
from pathlib import Path
from sglang_edsd.edtrain.report import plot_scaling
r = Path(sys.argv[1])
read = lambda p: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
runs = {}
for name, run in (("EDSD", "edsd"), ("EAGLE-3", "eagle3")):
    legs = sorted((read(p / "evals.jsonl") for p in r.glob(f"run-{run}-ext*")), key=lambda e: e[0]["tokens_seen"])
    runs[name] = read(r / f"run-{run}/evals.jsonl") + [e for leg in legs for e in leg[1:]]
print(plot_scaling(runs, r / "scaling.png"))
PY
}

for stage in $stages; do "$stage"; done
