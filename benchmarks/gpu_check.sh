#!/usr/bin/env bash
# The GPU checks that need no SGLang server, in one run on one H100/H200 (docs/gpu.md says
# which claims they cover and which stay unmeasured). Under 10 minutes by construction: the
# step limits add up to 585 s; a failed or timed-out step does not stop the others.
#
#   bash benchmarks/gpu_check.sh OUT            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run OUT  # anywhere: same steps on CPU, tiny sizes
#
# Needs python with torch, triton, transformers (safetensors, tqdm come with it) and pytest;
# not SGLang, sgl-kernel, a network or a model download. The repo is used in place
# (PYTHONPATH), nothing is installed. $PYTHON picks the interpreter (default: python3).
# Writes under OUT: gpu_check.log (everything), env.json (GPU_CHECK_COMMIT names the commit),
# pytest.xml, kernels/*.json (one per microbenchmark run), edtrain-scale.{json,md,png},
# edtrain-step.json, summary.json (per step: rc, seconds); exits 1 if any step failed.
set -uo pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh [--dry-run] OUT_DIR" >&2; exit 2; }
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
[[ $# -eq 1 ]] || usage
OUT=$1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT/kernels" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
STEPS=$OUT/.steps.tsv
: > "$LOG"
: > "$STEPS"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
cd "$REPO" || exit 2

# step NAME LIMIT_S CMD...: run with a time limit, log it, record rc and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$STEPS"
    echo "=== $name: rc=$rc in $((SECONDS - start))s" | tee -a "$LOG"
}

if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>> "$LOG"; then
    echo "gpu_check: no CUDA device visible to $PY (see $LOG); use --dry-run for a CPU rehearsal" | tee -a "$LOG" >&2
    exit 2
fi

step env 20 "$PY" - "$OUT/env.json" "$DRY" <<'EOF'
import importlib.util, json, os, platform, subprocess, sys
import torch, transformers, triton
info = {"dry_run": sys.argv[2] == "1", "commit": os.environ.get("GPU_CHECK_COMMIT", "unknown"), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "triton": triton.__version__, "transformers": transformers.__version__,
        "sglang_importable": importlib.util.find_spec("sglang") is not None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired) as e:
    info["nvidia_smi"] = f"unavailable: {e}"
open(sys.argv[1], "w").write(json.dumps(info, indent=1))
print(json.dumps(info))
EOF

# GPU-only tests that start no server and import no SGLang: the Triton kernels (compiled,
# bf16/fp16/fp32, CUDA-graph capture) and the two-stream runner (fork/join, graph replay,
# grad mode). The dry run leaves out the interpreter cases, which the default suite runs.
TESTS=(tests/test_edfuse_kernels.py tests/test_edfuse_streams.py)
if [[ $DRY == 1 ]]; then
    step tests 120 "$PY" -m pytest "${TESTS[@]}" -q -rs -p no:cacheprovider --junitxml "$OUT/pytest.xml" \
        -k "not kernel_under_interpreter and not microbenchmark"
else
    step tests 120 "$PY" -m pytest "${TESTS[@]}" -q -rs -p no:cacheprovider --junitxml "$OUT/pytest.xml"
fi

# Online EDTrain at Llama-3.1-8B shape (random weights built on the device, random tokens):
# EDSD against EAGLE-3 on the same data, the target once per packed micro-batch. Writes its
# JSON/markdown/PNG after each recipe, so a timeout keeps the finished one.
if [[ $DRY == 1 ]]; then
    step edtrain-scale 60 "$PY" benchmarks/bench_edtrain_scale.py --shape tiny --device cpu \
        --work "$OUT/.scale-work" --out "$OUT/edtrain-scale.json"
else
    step edtrain-scale 130 "$PY" benchmarks/bench_edtrain_scale.py --shape llama3-8b --device cuda \
        --token-budget 100000 --work "$OUT/.scale-work" --out "$OUT/edtrain-scale.json"
fi
rm -rf "$OUT/.scale-work"

# Kernel sweep + side-stream A/B at Llama-3-8B (d=4096, E=14336) and 70B (d=8192, E=28672)
# widths, bf16, CUDA graphs on and off (the dry run: the interpreter smoke, no graphs).
BENCH=(benchmarks/bench_edfuse_kernels.py --dtype bf16 --providers triton,eager --rows 1,16,256,4096
       --hidden 4096,8192 --widths 14336,28672 --stream-rows 1,16,256,1024,4096 --out-dir "$OUT/kernels")
for shape in 8b:4096,14336 70b:8192,28672; do
    if [[ $DRY == 1 ]]; then
        step "kernels-${shape%%:*}" 75 "$PY" "${BENCH[@]}" --stream-shape "${shape#*:}" --interpret-smoke
        continue
    fi
    step "kernels-${shape%%:*}-nograph" 60 "$PY" "${BENCH[@]}" --stream-shape "${shape#*:}"
    step "kernels-${shape%%:*}-graph" 60 "$PY" "${BENCH[@]}" --stream-shape "${shape#*:}" --cuda-graph
done
# LayerNorm launch configs at >= 64 MB under CUDA graphs (the default is set from this table).
if [[ $DRY == 0 ]]; then
    step kernels-layernorm-configs 45 "$PY" benchmarks/bench_edfuse_kernels.py --dtype bf16 \
        --parts layernorm-configs --cuda-graph --ln-rows 4096,8192 --ln-hidden 4096,8192 --out-dir "$OUT/kernels"
fi

if [[ $DRY == 1 ]]; then
    step edtrain-step 30 "$PY" benchmarks/gpu_edtrain_step.py --device cpu --steps 2 --seq-len 64 \
        --out "$OUT/edtrain-step.json"
else
    step edtrain-step 30 "$PY" benchmarks/gpu_edtrain_step.py --device cuda --steps 30 --seq-len 2048 \
        --out "$OUT/edtrain-step.json"
fi

"$PY" - "$STEPS" "$OUT/summary.json" <<'EOF'
import json, sys
steps = [dict(zip(("name", "rc", "seconds"), line.split("\t"))) for line in open(sys.argv[1]).read().splitlines()]
for s in steps:
    s["rc"], s["seconds"] = int(s["rc"]), int(s["seconds"])
    s["status"] = "ok" if s["rc"] == 0 else ("timeout" if s["rc"] in (124, 137) else "failed")
summary = {"ok": all(s["rc"] == 0 for s in steps), "seconds": sum(s["seconds"] for s in steps), "steps": steps}
open(sys.argv[2], "w").write(json.dumps(summary, indent=1))
print(json.dumps(summary))
EOF
rm -f "$STEPS"
"$PY" -c "import json, sys; sys.exit(0 if json.load(open('$OUT/summary.json'))['ok'] else 1)"
