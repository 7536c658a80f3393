#!/usr/bin/env bash
# The GPU check of docs/performance.md ("On a GPU") and docs/results.md ("GRPO's own effect on a GPU"),
# on one CUDA device:
#   1. bench_generate.py at 4 x G=8 x 64 tokens (with the host-overhead table, eager against compiled, and the
#      compiled engine, CUDA graphs, beside the eager one) and at the gpu preset's 16 x G=8 x 128 tokens;
#   2. full-dev greedy evaluations of the untuned model, single-step and with --max-turns 3;
#   3. the warm-up stage (agents/sft_warmup.py, 320 generated questions) and its full-dev evaluation;
#   4. GRPO from that warm start with --preset gpu, three variants side by side on the same GPU
#      (A: the defaults, binary reward, group scaling; B: --reward arctic --scale-rewards batch;
#       C: --reward arctic --drop-unsolved-groups), each evaluated on the full dev split and paired
#      against the warm start (benchmarks/paired.py).
#
#   bash benchmarks/gpu_check.sh ../shared/data/temptabqa-c runs/gpu_check        # STEPS=10 by default
#   STEPS=50 TRAIN_TIMEOUT=1800 bash benchmarks/gpu_check.sh ../shared/data/temptabqa-c runs/gpu_check
#
# TRAIN_TIMEOUT (seconds, default none) stops each variant early; its last checkpoint (every 5 steps)
# is then the one evaluated. PYTHON (default .venv/bin/python) and THREADS (CPU threads per process,
# default 3) can be set too. Logs, metrics, evaluations and the paired tables land in the output folder.
set -u
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash benchmarks/gpu_check.sh DATA_DIR OUT_DIR}
W=${2:?usage: bash benchmarks/gpu_check.sh DATA_DIR OUT_DIR}
PY=${PYTHON:-.venv/bin/python}; TH=${THREADS:-3}; STEPS=${STEPS:-10}
LIMIT=${TRAIN_TIMEOUT:+timeout $TRAIN_TIMEOUT}
mkdir -p "$W"
log(){ echo "[$(date +%T)] $*"; }
EV="benchmarks/evaluate.py --dataset temptabqa-c --data-dir $DATA --split dev --device cuda --batch-size 32 --no-progress --threads $TH"

log "bench_generate + untuned evaluations (background)"
( $PY benchmarks/bench_generate.py --device cuda --data-dir "$DATA" --prompts 4 -G 8 --repeats 3 --check-prompts 8 \
    --compile > "$W/bench_4x8.txt" 2>&1
  $PY benchmarks/bench_generate.py --device cuda --data-dir "$DATA" --prompts 16 -G 8 --max-completion-length 128 \
    --repeats 2 --check-prompts 4 --no-host-overhead > "$W/bench_16x8_128.txt" 2>&1 ) & pids=($!)
$PY $EV --policy few-shot --schema flat --max-completion-length 128 --out "$W/eval_untuned" > "$W/eval_untuned.log" 2>&1 &
pids+=($!)
$PY $EV --policy few-shot --schema flat --max-completion-length 128 --max-turns 3 --out "$W/eval_untuned_mt3" \
    > "$W/eval_untuned_mt3.log" 2>&1 & pids+=($!)

log "warm-up stage"
$PY agents/sft_warmup.py --device cuda --examples 320 --max-completion-length 128 --threads "$TH" \
    --output-dir "$W/warm" > "$W/warm.log" 2>&1 || { log "warm-up failed, see $W/warm.log"; exit 1; }
$PY $EV --policy "$W/warm/adapter" --max-completion-length 128 --out "$W/eval_warm" > "$W/eval_warm.log" 2>&1 &
pids+=($!)

variant() {  # name, extra flags
  local name=$1; shift
  $LIMIT $PY agents/grpo_train.py --preset gpu --data-dir "$DATA" --warmup-adapter "$W/warm/adapter" --steps "$STEPS" \
      --save-every 5 --threads "$TH" --output-dir "$W/$name" "$@" > "$W/$name.log" 2>&1
  log "variant $name exited with $?"
  local last; last=$(ls -d "$W/$name"/checkpoints/step_* 2>/dev/null | sort | tail -n 1)
  [ -n "$last" ] || { log "no checkpoint for $name"; return; }
  $PY $EV --policy "$last/adapter" --max-completion-length 128 --out "$W/eval_$name" > "$W/eval_$name.log" 2>&1
  log "evaluated $name ($last)"
}
log "GRPO variants"
variant A_default & pids+=($!)
variant B_arctic_batch --reward arctic --scale-rewards batch & pids+=($!)
variant C_arctic_drop --reward arctic --drop-unsolved-groups & pids+=($!)
wait "${pids[@]}"  # the listed jobs only (a bare wait would also wait for process substitutions)

$PY benchmarks/evaluate.py --summarize "$W"/eval_* | tee "$W/summary.md"
for name in A_default B_arctic_batch C_arctic_drop; do
  after=$(ls "$W/eval_$name"/*.json 2>/dev/null | head -n 1)
  [ -n "$after" ] && $PY benchmarks/paired.py "$W"/eval_warm/*.json "$after" | tee "$W/paired_$name.md"
done
log done
