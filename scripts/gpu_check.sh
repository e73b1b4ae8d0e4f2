#!/usr/bin/env bash
# The prepared accelerator check (issue 16, item 6): about 8 minutes on one GPU.
#
#   scripts/gpu_check.sh             run it (needs CUDA); outputs under results/gpu/
#   scripts/gpu_check.sh --dry-run   print every command and check that each tool, option and
#                                    config key exists, without a GPU (CI runs this)
#
# Steps, each under its own time limit:
#   1. quickstart on CUDA in bf16 (accelerate launch --mixed_precision bf16; the start-up line
#      must say "device cuda" and "precision bf16 (from accelerate launch)")
#   2. bench_train.py, poolformer_s12 at 224/96 px, 2 and 6 local crops, unimix vs lightly's loop
#   3. a fixed-epoch CIFAR-10 pretraining (cifar10_nano, bf16) with the k-NN at the end
#   4. unimix knn --device cuda on CIFAR-10 of that run
# Run directories (checkpoints) go to runs/gpu/; logs, JSON and summary.md to results/gpu/.
# Step 3's k-NN is meant to be set beside the DINO rows of lightly's published CIFAR-10 table
# (https://docs.lightly.ai/getting_started/benchmarks.html): a different backbone and budget,
# so an order-of-magnitude check, not a like-for-like one.
# Environment: PYTHON (default .venv/bin/python), DATA (default ../shared/data/cifar10),
# EPOCHS (default 10), OUT (default results/gpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (use --dry-run or nothing)" >&2; exit 2 ;;
esac

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA=${DATA:-../shared/data/cifar10}
EPOCHS=${EPOCHS:-10}
OUT=${OUT:-results/gpu}
RUNS=runs/gpu
LAUNCH=("$PY" -m accelerate.commands.launch --num_processes 1 --num_machines 1
    --dynamo_backend no --mixed_precision bf16)
PRETRAIN=(-m unimix.cli pretrain)
QUIET=(logging.progress_bar=false logging.tensorboard=false)

QUICKSTART=(--config quickstart "output_dir=$RUNS/quickstart" data.num_workers=8 "${QUIET[@]}")
CIFAR=(--config cifar10_nano "data.dataset=$DATA" "epochs=$EPOCHS" max_minutes=3
    eval.knn_every_epochs=0 eval.knn_at_end=true data.num_workers=8
    "output_dir=$RUNS/cifar10_nano" "${QUIET[@]}")
bench() { # bench_train.py at 224/96 px with $1 local crops
    echo "$PY" scripts/bench_train.py --backbone poolformer_s12 --data "$DATA/train" \
        --global-size 224 --local-size 96 --num-local "$1" --batch-size 64 --steps 8 \
        --warmup 2 --rounds 2 --num-workers 12 --out "$OUT/bench_train_224_local$1.json"
}
KNN=("$PY" -m unimix.cli knn "$RUNS/cifar10_nano" --device cuda --data "$DATA" --no-progress
    --out "$OUT/knn_cuda.json")

show() { printf '  $'; printf ' %q' "$@"; printf '\n'; }

# --- dry run: every command, and every tool/option/key it uses checked to exist -------------
has_options() { # has_options "help text" --opt ...: each option appears in the help
    local help=$1 missing=()
    shift
    for opt in "$@"; do grep -q -- "$opt" <<<"$help" || missing+=("$opt"); done
    [ ${#missing[@]} -eq 0 ] || { echo "error: options missing: ${missing[*]}" >&2; return 1; }
}

dry_run() {
    echo "gpu_check --dry-run: commands it would run, each checked"
    echo "1. quickstart, CUDA, bf16"
    show "${LAUNCH[@]}" "${PRETRAIN[@]}" "${QUICKSTART[@]}"
    has_options "$("$PY" -m accelerate.commands.launch --help)" --num_processes \
        --num_machines --dynamo_backend --mixed_precision
    "$PY" "${PRETRAIN[@]}" "${QUICKSTART[@]}" --print-config >/dev/null
    echo "2. bench_train.py 224/96 px, poolformer_s12, 2 and 6 local crops"
    for n in 2 6; do echo "  \$ $(bench "$n")"; done
    has_options "$("$PY" scripts/bench_train.py --help)" --backbone --data --global-size \
        --local-size --num-local --batch-size --steps --warmup --rounds --num-workers --out
    "$PY" -c "from unimix.backbones import create_dino_backbone as c; c('poolformer_s12')"
    echo "3. CIFAR-10 pretraining, $EPOCHS epochs, k-NN at the end"
    show "${LAUNCH[@]}" "${PRETRAIN[@]}" "${CIFAR[@]}"
    "$PY" "${PRETRAIN[@]}" "${CIFAR[@]}" --print-config >/dev/null
    echo "4. k-NN on CUDA"
    show "${KNN[@]}"
    has_options "$("$PY" -m unimix.cli knn --help)" --device --data --no-progress --out
    [ -d "$DATA/train" ] && [ -d "$DATA/test" ] \
        || echo "note: $DATA/{train,test} absent here; the GPU machine needs them"
    echo "dry run OK: every tool, option and config key exists"
}

# --- the real check -------------------------------------------------------------------------
step() { # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record rc and seconds
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    echo "==> $name (limit ${limit} s)"
    show "$@"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    printf '| %s | %s | %d |\n' "$name" "$rc" $((SECONDS - start)) >>"$OUT/steps.md"
    tail -n 3 "$OUT/$name.log"
    return 0
}

collect() { # copy a run's small outputs (no checkpoints) into $OUT/$2/
    mkdir -p "$OUT/$2"
    for f in config.yaml metrics.jsonl knn.json; do
        [ -f "$RUNS/$1/$f" ] && cp "$RUNS/$1/$f" "$OUT/$2/"
    done
    return 0
}

real_run() {
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "error: no CUDA device visible to torch; use --dry-run on a machine without GPU" >&2
        exit 2
    }
    [ -d "$DATA/train" ] || { echo "error: $DATA/train not found (set DATA=)" >&2; exit 2; }
    mkdir -p "$OUT"
    rm -rf "$RUNS"
    local start=$SECONDS
    printf '| step | exit code | seconds |\n|---|---:|---:|\n' >"$OUT/steps.md"
    step quickstart_bf16 150 "${LAUNCH[@]}" "${PRETRAIN[@]}" "${QUICKSTART[@]}"
    collect quickstart quickstart_bf16
    grep -q "device cuda" "$OUT/quickstart_bf16.log" \
        && grep -q "precision bf16 (from accelerate launch)" "$OUT/quickstart_bf16.log" \
        || echo "WARNING: the start-up line does not say cuda + bf16 from the launcher"
    for n in 2 6; do
        # shellcheck disable=SC2046 # bench prints a command of plain words
        step "bench_train_224_local$n" 100 $(bench "$n")
    done
    step cifar10_pretrain 270 "${LAUNCH[@]}" "${PRETRAIN[@]}" "${CIFAR[@]}"
    collect cifar10_nano cifar10_pretrain
    step knn_cuda 90 "${KNN[@]}"
    summarize $((SECONDS - start))
}

summarize() {
    {
        echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
        echo
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
        echo
        cat "$OUT/steps.md"
        echo
        echo "total: $1 s (budget 480 s)"
        echo
        echo "quickstart: $(grep -h 'k-NN top-1' "$OUT/quickstart_bf16.log" | tail -n 1)"
        echo "CIFAR-10 ($EPOCHS epochs): $(grep -h 'k-NN top-1' "$OUT/cifar10_pretrain.log" | tail -n 1)"
        echo "lightly's published CIFAR-10 table: https://docs.lightly.ai/getting_started/benchmarks.html"
    } >"$OUT/summary.md"
    cat "$OUT/summary.md"
}

if [ "$DRY" = 1 ]; then dry_run; else real_run; fi
