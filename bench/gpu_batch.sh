#!/usr/bin/env bash
# One call on the GPU machine: the GPU tests, `wandoc check --deep`, regressions under `wanrun generate`, and the
# guard-overhead benchmark. Logs go to $OUT; a short table prints last. Wheels the machine lacks travel in .whl/.
set -uo pipefail
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

timeout 280 python3 -m pytest -q -m gpu tests/gpu tests/test_pipeline.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
OFF=$(mktemp -d)
python3 -c "from tests import wanrepo; from pathlib import Path; wanrepo.make_official_checkout(wanrepo.fetch_wan22_wheel(), Path('$OFF'))"
(cd "$OFF" && timeout 120 python3 -m wandoc check --deep --shell bash -- --task t2v-1.3B --offload_model True) > "$OUT/check_deep.txt" 2>&1
echo "wandoc check --deep exit: $?" >> "$OUT/check_deep.txt"
for sw in "" "--weights-dtype fp32" "--offload" "--cpu-block 3" "--host-copy"; do
  name=$(echo "clean$sw" | tr -d ' -' )
  timeout 120 python3 -m wanrun generate --preset wan-1.3b --size 832x480 --frames 21 --steps 4 --device cuda \
    --out "$OFF/$name.gif" --report "$OUT/run_$name.json" --fail-on never --quiet $sw > "$OUT/run_$name.txt" 2>&1
  echo "$name exit $?"
done
timeout 300 python3 bench/bench_guard_overhead.py --runs 3 --json "$OUT/guard_overhead.json" 2>&1 | tee "$OUT/bench.log" | tail -15
python3 - <<'PY'
import json, glob, os
out = os.environ.get("OUT", "/tmp/out")
print(f"{'run':22s} {'s/step':>7s} {'H2D MB':>8s} {'cast MB':>8s} {'rep MB':>8s} {'cpu ops':>7s}  findings")
for path in sorted(glob.glob(f"{out}/run_*.json")):
    r = json.load(open(path)); s = r["steps"][1] if len(r["steps"]) > 1 else r["steps"][0]
    rules = ",".join(sorted({f["rule"] for f in r["findings"] if f["severity"] != "info"}))
    print(f"{os.path.basename(path)[4:-5]:22s} {s['seconds']:7.3f} {s['h2d_bytes']/2**20:8.1f} "
          f"{s['cast_bytes']/2**20:8.1f} {s['repeated_cast_bytes']/2**20:8.1f} {s['cpu_ops']:7d}  {rules}")
PY
grep -E "passed|failed" "$OUT/gpu_tests.log" | tail -1
