#!/usr/bin/env bash
# On the GPU machine: `bench/gpu_batch.sh tests` runs the GPU tests; `bench/gpu_batch.sh runs` runs `wandoc check
# --deep`, the regressions under `wanrun generate` and a user's checkout under `--repo`; `bench/gpu_batch.sh bench`
# the guard-overhead benchmark; `bench/gpu_batch.sh everywhere` the guard around diffusers, unnamed models and
# torch.compile (tests/gpu/test_guard_everywhere_gpu.py, then bench/bench_compile_guard.py) (each part fits one
# device call; diffusers, transformers and accelerate travel in .whl/ when the machine lacks them). Logs go to $OUT; a short table prints last. Wheels the machine lacks
# travel in .whl/.
set -uo pipefail
PART=${1:-runs}  # tests | runs | repo (the --repo part of runs alone) | bench | everywhere
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export WANDOC_TEST_CACHE=$PWD/.whl PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/machine.txt"

if [ "$PART" = bench ]; then  # the guard's overhead, both shapes; alone, it fills most of one call
  timeout 570 python3 bench/bench_guard_overhead.py --runs "${RUNS:-8}" --python-costs \
    --json "$OUT/guard_overhead.json" 2>&1 | tee "$OUT/bench.log" | tail -12
  exit 0
fi
if [ "$PART" = everywhere ]; then
  timeout 400 python3 -m pytest -q -m gpu tests/gpu/test_guard_everywhere_gpu.py -p no:cacheprovider 2>&1 \
    | tee "$OUT/everywhere_tests.log" | tail -30
  timeout 170 python3 bench/bench_compile_guard.py --json "$OUT/compile_guard.json" 2>&1 \
    | tee "$OUT/compile_guard.log" | tail -30
  exit 0
fi
if [ "$PART" = tests ]; then
  timeout 560 python3 -m pytest -q -m gpu tests/gpu tests/test_pipeline.py -p no:cacheprovider 2>&1 \
    | tee "$OUT/gpu_tests.log" | tail -40
  exit 0
fi
OFF=$(mktemp -d)
if [ "$PART" = runs ]; then
python3 -c "from tests import wanrepo; from pathlib import Path; wanrepo.make_official_checkout(wanrepo.fetch_wan22_wheel(), Path('$OFF'))"
(cd "$OFF" && timeout 120 python3 -m wandoc check --deep --shell bash -- --task t2v-1.3B --offload_model True) > "$OUT/check_deep.txt" 2>&1
echo "wandoc check --deep exit: $?" >> "$OUT/check_deep.txt"
for sw in "" "--weights-dtype fp32" "--offload" "--cpu-block 3" "--host-copy"; do
  name=$(echo "clean$sw" | tr -d ' -' )
  timeout 120 python3 -m wanrun generate --preset wan-1.3b --size 832x480 --frames 21 --steps 4 --device cuda \
    --out "$OFF/$name.gif" --report "$OUT/run_$name.json" --fail-on never --quiet $sw > "$OUT/run_$name.txt" 2>&1
  echo "$name exit $?"
done
fi
# a user's checkout (--repo) at the Wan-1.3B shape: the fast commit and the tip with three regressions, compared
REPO=$(mktemp -d)
python3 - "$REPO" <<'PY' > "$OUT/repo_build.txt" 2> "$OUT/repo_build.err"
import sys; sys.path.insert(0, "tests")
from pathlib import Path
from runnable_wan import WAN_1_3B_MODEL, make_runnable_repo
from wanrepo import fetch_wan22_wheel, git
r = make_runnable_repo(fetch_wan22_wheel(), Path(sys.argv[1]), WAN_1_3B_MODEL, dtype="bfloat16")
print(r.root, r.ckpt_dir, r.fast, r.cpu_module)
PY
read -r WAN CKPT FAST TIP < "$OUT/repo_build.txt"
for ref in fast main; do
  git -C "$WAN" checkout -q "$ref"
  timeout 240 python3 -m wanrun generate --repo "$WAN" --fail-on never --report "$OUT/repo_$ref.json" \
    --html "$OUT/repo_$ref.html" -- \
    --task t2v-1.3B --size '832*480' --frame_num 21 --offload_model False --convert_model_dtype \
    --ckpt_dir "$CKPT" --sample_steps 6 > "$OUT/repo_$ref.txt" 2>&1
  echo "repo $ref exit $?"
done
git -C "$WAN" checkout -q main
python3 -m wanrun compare "$OUT/repo_fast.json" "$OUT/repo_main.json" > "$OUT/repo_compare.txt" 2>&1; echo "compare exit $?"
python3 - <<'PY'
import json, glob, os
out = os.environ.get("OUT", "/tmp/out")
print(f"{'run':22s} {'s/step':>7s} {'H2D MB':>8s} {'cast MB':>8s} {'rep MB':>8s} {'cpu ops':>7s}  findings")
for path in sorted(glob.glob(f"{out}/run_*.json")) + sorted(glob.glob(f"{out}/repo_*.json")):
    r = json.load(open(path))
    if not r["steps"]:
        print(f"{os.path.basename(path)[:-5]:22s} no steps: {r['summary'].get('error')}"); continue
    s = r["steps"][1] if len(r["steps"]) > 1 else r["steps"][0]
    rules = ",".join(sorted({f["rule"] for f in r["findings"] if f["severity"] != "info"}))
    n = lambda key: s.get(key) or 0  # null: the step was not inspected (schema 2)
    print(f"{os.path.basename(path)[:-5]:22s} {s['seconds']:7.3f} {n('h2d_bytes')/2**20:8.1f} "
          f"{n('cast_bytes')/2**20:8.1f} {n('repeated_cast_bytes')/2**20:8.1f} {n('cpu_ops'):7d}  {rules}")
PY
grep -E "s/step|worse" "$OUT/repo_compare.txt" | head -4
