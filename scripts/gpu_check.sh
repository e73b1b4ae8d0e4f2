#!/usr/bin/env bash
# The prepared accelerator check (issue 24): about 8 minutes on one GPU, on a bare machine that
# has torch/torchvision/timm/accelerate but not faiss, lightly, webdataset, ../shared or unimix.
#
#   scripts/gpu_check.sh --prepare   here, once: pack CIFAR-10 (DATA) and the pure-Python wheels
#                                    into .carry/ (git-ignored, ~56 MB) to travel with the checkout
#   scripts/gpu_check.sh             there (needs CUDA): installs what .carry/ holds, then runs
#                                    the steps below; outputs under results/gpu/
#   scripts/gpu_check.sh --dry-run   print every command and check that each tool, option and
#                                    config key exists, without a GPU (CI runs this)
#
# Steps, each under its own time limit (a step that fails or times out does not stop the rest):
#   1. the CUDA-only tests (views rendered on CUDA = CPU, nvJPEG = libjpeg-turbo, k-NN without faiss)
#   2. CIFAR-10 nano step img/s: views rendered in the loader vs on the device, fp32 vs bf16,
#      compiled (reduce-overhead: CUDA graphs) or not, batch 128 and 512
#   3. bench_train.py at 224/96 px, poolformer_s12, batch 128, bf16 on both sides, 2 and 6 local
#   4. 224-px JPEGs decoded by PIL in the loader workers vs by nvJPEG on the device
#   5. the CIFAR-10 race at 250,000 images, ours vs lightly's recipe, 2 seeds each, bf16
#   6. unimix knn --device cuda (torch backend: no faiss there)
# Run directories go to runs/gpu/; logs, JSON and summary.md to results/gpu/.
# Environment: PYTHON (default .venv/bin/python, else python3), DATA (default
# ../shared/data/cifar10, else the unpacked .carry/cifar10), OUT (default results/gpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=run
case "${1:-}" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    "") ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (use --prepare, --dry-run or nothing)" >&2; exit 2 ;;
esac

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
CARRY=.carry
DATA=${DATA:-../shared/data/cifar10}
OUT=${OUT:-results/gpu}
RUNS=runs/gpu
BUDGET_S=540 # steps are skipped once this much time has passed (the device allows 600 a call)
WHEELS=("lightly==1.6.0" "webdataset==1.0.2" "braceexpand==0.1.7")

GPU_TEST_FILES=(tests/ssl/test_dino_multicrop.py tests/data/test_data_jpeg.py tests/eval/test_eval_search.py)
SPEED_VARIANTS=(
    "loader-fp32: placement=loader,precision=fp32"
    "device-fp32: placement=device,precision=fp32"
    "device-bf16: placement=device,precision=bf16"
    "device-bf16-graphs: placement=device,precision=bf16,compile=inductor,compile_mode=reduce-overhead"
    "device-bf16-b512: placement=device,precision=bf16,batch_size=512"
)
DECODE_VARIANTS=(
    "pil-in-workers: placement=device,precision=bf16,decode=loader"
    "nvjpeg-on-device: placement=device,precision=bf16,decode=device"
)
FINALIST=(data.batch_size=128 augment.num_local=2 optim.base_lr=2e-3 dino.momentum_teacher_end=0.99
    dino.koleo_weight=0.05 optim.warmup_epochs=0.5 dino.freeze_last_layer_epochs=0.5)
JPEGS=/tmp/unimix_jpeg224

commands() { # the command lines, spelled with the current DATA
    GPU_TESTS=(-m pytest -q -p no:cacheprovider -k cuda "${GPU_TEST_FILES[@]}")
    SPEED=(scripts/bench_speed.py --data "$DATA" --cache --batch-size 128 --num-local 2
        --out-dim 4096 --steps 200 --warmup 30 --num-workers 6 --out "$OUT/speed_cifar_nano.json")
    for v in "${SPEED_VARIANTS[@]}"; do SPEED+=(--variant "$v"); done
    DECODE=(scripts/bench_speed.py --data "$JPEGS" --backbone poolformer_s12 --global-size 224
        --local-size 96 --num-local 2 --batch-size 128 --steps 12 --warmup 3 --num-workers 12
        --out "$OUT/decode_224.json")
    for v in "${DECODE_VARIANTS[@]}"; do DECODE+=(--variant "$v"); done
    RACE=(scripts/bench_cifar.py --data "$DATA" --images 250000 --seeds 0 1 --peer lightly
        --precision bf16 --points 2 --parallel 2 --threads 4 --num-workers 6 --out "$RUNS/race"
        "${FINALIST[@]}")
    KNN=(-m unimix.cli knn "$RUNS/race/ours/seed0/run" --device cuda --data "$DATA"
        --no-progress --out "$OUT/knn_cuda.json")
}
commands
bench() { # bench_train.py at 224/96 px with $1 local crops, bf16 on both sides
    echo "$PY" scripts/bench_train.py --backbone poolformer_s12 --data "$DATA/train" \
        --global-size 224 --local-size 96 --num-local "$1" --batch-size 128 --steps 6 \
        --warmup 2 --rounds 2 --num-workers 12 --precision bf16 --placement device \
        --out "$OUT/bench_train_224_local$1.json"
}

show() { printf '  $'; printf ' %q' "$@"; printf '\n'; }

# --- here: what travels ---------------------------------------------------------------------
prepare() {
    [ -d "$DATA/train" ] || { echo "error: $DATA/train not found (set DATA=)" >&2; exit 2; }
    grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >>.git/info/exclude
    "$PY" -m unimix.bench.carry pack "$DATA" "$CARRY/cifar10"
    rm -rf "$CARRY/wheels"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" "${WHEELS[@]}"
    du -sh "$CARRY"
    echo "then, with a device: run(command='scripts/gpu_check.sh', carry=['.carry'], timeout_s=600)"
}

# --- dry run: every command, and every tool/option/key it uses checked to exist -------------
has_options() { # has_options "help text" --opt ...: each option appears in the help
    local help=$1 missing=()
    shift
    for opt in "$@"; do grep -q -- "$opt" <<<"$help" || missing+=("$opt"); done
    [ ${#missing[@]} -eq 0 ] || { echo "error: options missing: ${missing[*]}" >&2; return 1; }
}

dry_run() {
    echo "gpu_check --dry-run: commands it would run, each checked"
    echo "1. CUDA-only tests"
    show "$PY" "${GPU_TESTS[@]}"
    for f in "${GPU_TEST_FILES[@]}"; do [ -f "$f" ] || { echo "error: $f missing" >&2; exit 1; }; done
    echo "2. CIFAR-10 nano step speed"
    show "$PY" "${SPEED[@]}"
    has_options "$("$PY" scripts/bench_speed.py --help)" --data --cache --batch-size --num-local \
        --out-dim --steps --warmup --num-workers --variant --backbone --global-size --local-size --out
    "$PY" -c "
import sys
from unimix.bench.speed import parse_variant
for v in sys.argv[1:]:
    parse_variant(v)" "${SPEED_VARIANTS[@]}" "${DECODE_VARIANTS[@]}" \
        || { echo "error: a --variant does not parse" >&2; exit 1; }
    echo "3. bench_train.py 224/96 px, poolformer_s12, bf16 both sides, 2 and 6 local crops"
    for n in 2 6; do echo "  \$ $(bench "$n")"; done
    has_options "$("$PY" scripts/bench_train.py --help)" --backbone --data --global-size \
        --local-size --num-local --batch-size --steps --warmup --rounds --num-workers \
        --precision --placement --out
    "$PY" -c "from unimix.backbones import create_dino_backbone as c; c('poolformer_s12')"
    echo "4. 224-px JPEGs: PIL in the workers vs nvJPEG on the device"
    show "$PY" "${DECODE[@]}"
    echo "5. CIFAR-10 race at 250,000 images, 2 seeds, bf16"
    show "$PY" "${RACE[@]}"
    has_options "$("$PY" scripts/bench_cifar.py --help)" --data --images --seeds --peer \
        --precision --points --parallel --threads --num-workers --out
    has_options "$("$PY" -m unimix.bench.peer_lightly --help)" --device --precision --num-workers
    "$PY" -m unimix.cli pretrain -c cifar10_nano "data.dataset=$DATA" "${FINALIST[@]}" \
        --print-config >/dev/null
    echo "6. k-NN on CUDA"
    show "$PY" "${KNN[@]}"
    has_options "$("$PY" -m unimix.cli knn --help)" --device --data --no-progress --out
    "$PY" -m unimix.bench.carry 2>/dev/null || [ $? -eq 2 ]
    [ -d "$DATA/train" ] && [ -d "$DATA/test" ] \
        || echo "note: $DATA/{train,test} absent here; --prepare packs them for the GPU machine"
    echo "dry run OK: every tool, option and config key exists"
}

# --- there: the real check ------------------------------------------------------------------
setup() { # install the carried wheels and this checkout; unpack the carried data
    if [ -d "$CARRY/wheels" ]; then
        local site=/tmp/unimix_site
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
            "$CARRY"/wheels/*.whl
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
            --upgrade --target "$site" .
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if [ ! -d "$DATA/train" ] && [ -d "$CARRY/cifar10" ]; then
        "$PY" -m unimix.bench.carry unpack "$CARRY/cifar10" /tmp/unimix_cifar10
        DATA=/tmp/unimix_cifar10
        commands
    fi
}

jpegs_224() { # 1,024 JPEGs of about ImageNet's size (CIFAR-10 images enlarged to 400×300)
    "$PY" - "$DATA/train" "$JPEGS" <<'PYEOF'
import os, sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
names = sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs)[::48][:1024]
for i, path in enumerate(names):
    Image.open(path).convert("RGB").resize((400, 300), Image.BICUBIC).save(f"{dst}/{i:04d}.jpg", quality=90)
print(f"wrote {len(names)} JPEGs to {dst}")
PYEOF
}

step() { # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record rc and seconds
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    if [ $((SECONDS - T0)) -ge $BUDGET_S ]; then
        printf '| %s | skipped (budget) | 0 |\n' "$name" >>"$OUT/steps.md"
        return 0
    fi
    echo "==> $name (limit ${limit} s)"
    show "$@"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    printf '| %s | %s | %d |\n' "$name" "$rc" $((SECONDS - start)) >>"$OUT/steps.md"
    tail -n 4 "$OUT/$name.log"
    return 0
}

real_run() {
    T0=$SECONDS
    setup
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "error: no CUDA device visible to torch; use --dry-run on a machine without GPU" >&2
        exit 2
    }
    [ -d "$DATA/train" ] || { echo "error: $DATA/train not found (set DATA=, or --prepare)" >&2; exit 2; }
    mkdir -p "$OUT"
    rm -rf "$RUNS"
    printf '| step | exit code | seconds |\n|---|---:|---:|\n' >"$OUT/steps.md"
    step gpu_tests 90 "$PY" "${GPU_TESTS[@]}"
    step speed_cifar_nano 150 "$PY" "${SPEED[@]}"
    for n in 2 6; do
        # shellcheck disable=SC2046 # bench prints a command of plain words
        step "bench_train_224_local$n" 80 $(bench "$n")
    done
    jpegs_224 >/dev/null 2>&1 || true
    step decode_224 60 "$PY" "${DECODE[@]}"
    step cifar10_race 200 "$PY" "${RACE[@]}"
    cp "$RUNS/race/race.json" "$OUT/race.json" 2>/dev/null || true
    step knn_cuda 40 "$PY" "${KNN[@]}"
    summarize $((SECONDS - T0))
}

summarize() {
    {
        echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
        echo
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
        echo
        cat "$OUT/steps.md"
        echo
        echo "total: $1 s (budget $BUDGET_S s)"
        for name in speed_cifar_nano bench_train_224_local2 bench_train_224_local6 decode_224; do
            echo
            echo "## $name"
            echo '```'
            sed -n '/^our DINO step\|^DINO step/,$p' "$OUT/$name.log" 2>/dev/null | head -n 12
            echo '```'
        done
        echo
        echo "## CIFAR-10 race, 250,000 images, bf16"
        echo '```'
        tail -n 12 "$OUT/cifar10_race.log" 2>/dev/null
        echo '```'
        echo
        echo "k-NN on CUDA: $(tail -n 1 "$OUT/knn_cuda.log" 2>/dev/null)"
    } >"$OUT/summary.md"
    cat "$OUT/summary.md"
}

case $MODE in
    dry) dry_run ;;
    prepare) prepare ;;
    run) real_run ;;
esac
