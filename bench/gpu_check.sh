#!/usr/bin/env bash
# The GPU check of issue 17: ONE prepared script for a lent device machine, run from the
# repository root with a single `run` call:
#
#   bash bench/gpu_check.sh                 # everything under $OUT (a temporary folder if unset)
#   DEVICE=cpu QUICK=1 bash bench/gpu_check.sh   # a smoke run of the same steps without a GPU
#
# It installs nothing the machine already has (the device machine has a CUDA build of torch
# and no network): the project is imported from the working tree (PYTHONPATH), and a missing
# pure-Python dependency is reported, not downloaded.  Steps, each under its own time limit,
# each writing its log (and JSON where the tool has one) under $OUT:
#
#   1. pytest -m cuda             every CUDA test (graph path = plain loop, seed ensemble on
#                                 CUDA = separate runs, HVP and metrics on CUDA)
#   2. bench/gpu_speed.py         authors' loop, plain loop, graph path, 1/8/64 seeds, HVP,
#                                 with its self-checks (exit 1 when one disagrees)
#   3. bench/landscape_speed.py   Lanczos against power iteration on the device
#   4. cnzsl train --dataset SUN  as a user runs it
#   5. cnzsl figures --fast       as a user runs it
#
# and prints one compact table (step, exit status, seconds, the log's last line).  The limits
# add up to 8 minutes, so that a second try fits in a session's 15 minutes of device time.
set -uo pipefail

DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
root=$(pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

python3 -c 'import torch; print("torch", torch.__version__, "cuda available:", torch.cuda.is_available(),
  "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' | tee "$OUT/torch.txt"
missing=$(python3 - <<'EOF'
import importlib.util
names = ["numpy", "scipy", "matplotlib", "seaborn", "pytest", "hypothesis", "tqdm"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "missing Python packages (not installed: the machine has no network): $missing" | tee "$OUT/missing.txt"
fi

if [ "$QUICK" = 1 ]; then
    speed_args=(--epochs 1 --seeds 1,2)
    landscape_args=(--epochs 1 --max-lanczos 20 --max-power 40)
    train_args=(--epochs 2)
    figures_args=(--only attribute_statistics normalize_scale)
else
    speed_args=()
    landscape_args=()
    train_args=()
    figures_args=()
fi

results=()
step() {  # step NAME LIMIT_SECONDS COMMAND...: run it, keep its log, record status and time
    local name=$1 limit=$2
    shift 2
    local start end rc
    start=$(date +%s.%N)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    local last
    last=$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-90)
    results+=("$(printf '%-16s %4s %8s  %s' "$name" "$rc" "$(python3 -c "print(f'{$end - $start:.1f}')")" "$last")")
    echo "== $name: exit $rc"
}

step cuda_tests 120 python3 -m pytest -m cuda -q -p no:cacheprovider tests
step gpu_speed 150 python3 bench/gpu_speed.py --device "$DEVICE" --json "$OUT/gpu_speed.json" "${speed_args[@]}"
step landscape_speed 60 python3 bench/landscape_speed.py --device "$DEVICE" --json "$OUT/landscape_speed.json" \
    "${landscape_args[@]}"
step train_sun 45 python3 -m analysis train --dataset SUN --device "$DEVICE" --no-progress --out "$OUT/train-sun" \
    "${train_args[@]}"
step figures_fast 105 python3 -m analysis figures --fast --device "$DEVICE" --no-progress --out "$OUT/figures" \
    "${figures_args[@]}"

echo
printf '%-16s %4s %8s  %s\n' step exit seconds "last line of the log"
for row in "${results[@]}"; do
    echo "$row"
done | tee "$OUT/summary.txt"
echo "logs and JSON under $OUT"
