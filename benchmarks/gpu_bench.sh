#!/usr/bin/env bash
# Table 8's setting on one GPU in bf16, within 8 minutes: writes
# benchmarks/paper_nyudv2_<device>.json (device: JAX's device kind, e.g. NVIDIA_H200).
#
#     benchmarks/gpu_bench.sh                         # on a GPU host, from any directory
#     BATCH=16 SWEEP=256,1024 benchmarks/gpu_bench.sh # larger train batch, a token sweep
#     PRESET=paper_nyudv2_mae benchmarks/gpu_bench.sh # with MAE's ViT-B/16 encoders (308M)
#     PRESET=small ALLOW_CPU=1 benchmarks/gpu_bench.sh --num_blocks=1 --rounds=1 --warmup=0
#                                                     # a CPU smoke run of the script itself
#
# Extra arguments go to `python -m experiments.bench`. The bench runs on the first device only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PRESET=${PRESET:-paper_nyudv2}
BATCH=${BATCH:-8}
SWEEP=${SWEEP:-none}
LIMIT_S=${LIMIT_S:-480}
# The tests' 8 simulated CPU devices (tests/conftest.py) have no place here.
export XLA_FLAGS=$(echo "${XLA_FLAGS:-}" | sed 's/--xla_force_host_platform_device_count=[0-9]*//')

if ! device=$("$PY" -c 'import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)' \
    2>/dev/null); then
  echo "error: $PY cannot import jax; run \`make setup\` or set PY to a Python with mango_jax" \
       "installed" >&2
  exit 2
fi
platform=${device%% *}
kind=$(echo "${device#* }" | tr -c 'A-Za-z0-9\n' '_')
if [ "$platform" != gpu ] && [ -z "${ALLOW_CPU:-}" ]; then
  echo "error: JAX sees no GPU (first device: $device). Install jax[cuda12] or run on a GPU" \
       "host; ALLOW_CPU=1 runs the script on this backend anyway (a smoke test)." >&2
  exit 2
fi
out=benchmarks/${PRESET}_${kind}.json
start=$(date +%s)
timeout "$LIMIT_S" "$PY" -m experiments.bench --preset="$PRESET" --compute_dtype=bfloat16 \
  --batch_size="$BATCH" --sweep="$SWEEP" --out="$out" "$@"
echo "gpu_bench: $(( $(date +%s) - start )) s on $device"
