#!/usr/bin/env bash
# The GPU check, prepared for the day a GPU machine is lent: on an H100/H200 it runs in about five
# minutes and writes bench/gpu.md (or $GPU_MD).
#
#   scripts/gpu/device-check.sh BUNDLE_DIR
#
# BUNDLE_DIR holds the CUDA build (docent-eval, llama-batched-bench and the llama.cpp libraries
# beside them, from scripts/gpu/bundle.sh, or target/cuda/release itself) and donor.gguf, a tiny
# GGUF whose tokenizer the generated model borrows. Steps:
#   1. generate an 8B-shaped model (Llama-3-8B = Bllossom-8B shapes) with random Q4_0 weights;
#   2. `docent-eval preflight --parallel 64`: the predicted GPU memory;
#   3. `docent-eval run --parallel N --ignore-eos` for N in $PARALLEL on a generated question set;
#   4. `llama-batched-bench` on the same shapes (prompt length, generated tokens, N);
#   5. bench/gpu.md: tok/s, TTFT, peak GPU memory predicted vs measured, ratio to batched-bench.
# PRESET=tiny runs the same steps with a tiny model on any machine (the CPU fallback: the script
# itself is tested without a GPU); MAX_TOKENS, PARALLEL and QUESTIONS_PER_SEQ scale the work.
set -euo pipefail
bundle=$(cd "${1:?usage: device-check.sh BUNDLE_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
PRESET=${PRESET:-bllossom-8b}
PARALLEL=${PARALLEL:-1 8 32 64}
MAX_TOKENS=${MAX_TOKENS:-128}
QUESTIONS_PER_SEQ=${QUESTIONS_PER_SEQ:-3}
GPU_MD=${GPU_MD:-$repo/bench/gpu.md}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
donor=${DONOR:-}
for candidate in "$bundle/donor.gguf" "$repo/.device/donor.gguf" "$repo/models/SmolLM2-135M-Instruct.Q4_1.gguf"; do
  [ -z "$donor" ] && [ -e "$candidate" ] && donor=$candidate
done
[ -n "$donor" ] || { echo "no tokenizer donor GGUF: run scripts/gpu/bundle.sh" >&2; exit 2; }
bin=$bundle/docent-eval
bench=$bundle/llama-batched-bench
log() { printf '[device-check %s] %s\n' "$(date +%T)" "$*" >&2; }

# The CUDA runtime and cuBLAS: a toolkit on the machine, else the copies PyTorch's wheels carry.
cuda_libs() {
  for dir in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64; do
    [ -e "$dir/libcublas.so.13" ] && { echo "$dir"; return; }
  done
  python3 - <<'EOF' 2>/dev/null || true
import glob, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for hit in glob.glob(base + "/nvidia/cu13/lib/libcublas.so.13") + glob.glob(base + "/nvidia/cublas/lib/libcublas.so.13"):
        print(hit.rsplit("/", 1)[0]); sys.exit()
EOF
}
libs=$(cuda_libs)
if [ -n "$libs" ]; then
  for extra in $(dirname "$libs")/../cuda_runtime/lib "$libs"; do
    [ -d "$extra" ] && export LD_LIBRARY_PATH="$extra:${LD_LIBRARY_PATH:-}"
  done
fi
# The driver's libraries where a container mounts them.
[ -d /usr/local/nvidia/lib64 ] && export LD_LIBRARY_PATH="/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
log "CUDA libraries: ${libs:-none found}; GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"

# 1. The model.
model=$work/model.gguf
start=$EPOCHREALTIME
if [ "$PRESET" = tiny ]; then
  python3 "$repo/scripts/make_gguf.py" --layers 2 --hidden 256 --heads 4 --kv-heads 2 --ffn 512 \
    --quant q4_0 --vocab-from "$donor" --out "$model" >&2
else
  python3 "$repo/scripts/make_gguf.py" --preset "$PRESET" --quant q4_0 --pad-vocab \
    --vocab-from "$donor" --out "$model" >&2
fi
model_s=$(python3 -c "print(round($EPOCHREALTIME - $start, 1))")
log "model: $(du -h "$model" | cut -f1) in ${model_s} s"

# 2. Questions: the bundled set's questions, repeated with a number so that none is identical,
#    enough for QUESTIONS_PER_SEQ rounds at the largest N.
max_n=$(echo "$PARALLEL" | tr ' ' '\n' | sort -n | tail -1)
n_questions=$((max_n * QUESTIONS_PER_SEQ))
python3 - "$repo/questions/korean_history_sample.jsonl" "$work/questions.jsonl" "$n_questions" <<'EOF'
import json, sys
source, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = [json.loads(line)["question"] for line in open(source, encoding="utf-8") if line.strip()]
with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        f.write(json.dumps({"id": f"q{i}", "question": f"{i + 1}. {base[i % len(base)]}"}, ensure_ascii=False) + "\n")
EOF

"$bin" preflight --model "$model" --parallel "$max_n" --ctx $((512 + MAX_TOKENS)) >"$work/preflight.txt" 2>&1 || true
"$bin" preflight --model "$model" --parallel "$max_n" --ctx $((512 + MAX_TOKENS)) --json >"$work/preflight.json" 2>/dev/null || true
log "preflight: $(grep -E '^(machine|verdict)' "$work/preflight.txt" | tr '\n' ' ')"
if [ "$PRESET" != tiny ] && grep -q "GPU layers 0 " "$work/preflight.txt"; then
  # An 8B model on the CPU would take the whole lease: stop with what the loader says.
  log "no GPU visible to llama.cpp; not running the 8B model on the CPU"
  ldd "$bundle/libggml-cuda.so" >&2 || true
  cat "$work/preflight.txt" >&2
  exit 3
fi

# 3. docent-eval at each N, all runs in one database (the 4 GiB model is hashed once). Each N
#    answers QUESTIONS_PER_SEQ x N questions (at least 8).
db=$work/runs.db
rm -f "$db" "$work/runs.txt"
for n in $PARALLEL; do
  count=$((n * QUESTIONS_PER_SEQ)); [ "$count" -lt 8 ] && count=8
  head -n "$count" "$work/questions.jsonl" >"$work/q$n.jsonl"
  if RUST_LOG=docent_eval=info "$bin" run --model "$model" --questions "$work/q$n.jsonl" \
      --db "$db" --parallel "$n" --max-tokens "$MAX_TOKENS" --ignore-eos \
      --n-gpu-layers auto >"$work/run$n.log" 2>&1; then
    run_id=$(sed -n 's/.*started run \([0-9]*\):.*/\1/p' "$work/run$n.log" | head -1)
    echo "$n $run_id" >>"$work/runs.txt"
    log "run --parallel $n: $(grep -E 'generation|decode loop' "$work/run$n.log" | tr -s ' ' | tr '\n' ' ')"
  else
    log "run --parallel $n failed:"; tail -20 "$work/run$n.log" >&2
  fi
done
# The prompt length batched-bench gets: the mean of the largest run's prompts.
pp=$(python3 -c "import sqlite3,sys; print(round(sqlite3.connect(sys.argv[1]).execute('select 1.0*prompt_tokens/total from run_summary order by run_id desc').fetchone()[0]))" "$db" 2>/dev/null || echo 100)

# 4. llama-batched-bench on the same shapes: the mean prompt length of the runs, MAX_TOKENS
#    generated, all layers offloaded (what --n-gpu-layers auto chose above when it fits).
npl=$(echo $PARALLEL | tr ' ' ',')
if [ -x "$bench" ]; then
  "$bench" -m "$model" -c $((max_n * (pp + MAX_TOKENS) + 256)) -b 512 -ub 512 -ngl 99 -npp "$pp" \
    -ntg "$MAX_TOKENS" -npl "$npl" --output-format jsonl >"$work/batched.jsonl" 2>"$work/batched.log" ||
    { log "llama-batched-bench failed:"; tail -20 "$work/batched.log" >&2; }
else
  log "no llama-batched-bench in $bundle"
fi

# 5. The report.
python3 "$repo/scripts/gpu/report.py" "$work" "$GPU_MD" "$PRESET" "$model_s" "$pp" "$MAX_TOKENS"
log "wrote $GPU_MD"
