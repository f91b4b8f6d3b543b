#!/usr/bin/env bash
# The same-GPU comparison, in one run of under 10 minutes, on a machine with an NVIDIA (or any
# Vulkan) GPU, PyTorch and no package registry. Needs only the kit (bench/gpu/make-kit.sh).
#
#   bash bench/gpu/run.sh --kit artifacts/gpu-kit/tabtrain-gpu-kit.tar.xz [--out DIR] [--seconds 240]
#   bash run.sh --smoke ...   tiny models, small batch, 20 s run: checks the kit (llvmpipe is fine)
#
#   (a) PyTorch d2l AlexNet and VGG-11 (÷4) training examples/s, batch 128, fp32   torch_bench.py
#   (b) tabtrain's WebGPU worker forward+backward examples/s, same models and batch,
#       with and without reading the gradients back; weight upload / readback alone  worker-bench, io-bench
#   (b2) where a GPU step goes: every AlexNet / VGG-11 layer's forward, input- and filter-gradient
#       kernels (each variant) beside this adapter's own matmul peak (a tiled WGSL kernel of ours);
#       upload / readback / on-device bandwidths; a step's split: compute, readback of the gradient
#       or the PowerSGD factors, the update on the device, the refresh                layer-bench
#   (c) coordinator + 2 Dawn workers on this GPU, real Fashion-MNIST, AlexNet, as many
#       steps as fit in --seconds (default 240), loss and examples/s                 train-bench
# Writes gpu-bench.json, BENCHMARKS-gpu.md and run.log to --out (default $OUT if set, else
# ./gpu-bench-out), and appends the markdown to docs/BENCHMARKS.md when run from a checkout.
set -uo pipefail
START=$SECONDS
KIT= KITDIR= SMOKE=0 CSECONDS=240 BATCH=128 APPEND=
OUTDIR=${OUT:-$PWD/gpu-bench-out}
while [ $# -gt 0 ]; do
  case $1 in
    --kit) KIT=$2; shift 2 ;;
    --kit-dir) KITDIR=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --seconds) CSECONDS=$2; shift 2 ;;
    --append) APPEND=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUTDIR"
WORK=$(mktemp -d /tmp/tabtrain-gpu-bench.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT   # KEEP=1 keeps the unpacked kit and the JSON parts
exec > >(tee "$OUTDIR/run.log") 2>&1
say() { echo "[run.sh $((SECONDS - START))s] $*"; }

# ---- the kit ----
if [ -z "$KITDIR" ]; then
  if [ -z "$KIT" ]; then
    for k in artifacts/gpu-kit/tabtrain-gpu-kit.tar.xz "$(dirname "$0")/../../artifacts/gpu-kit/tabtrain-gpu-kit.tar.xz"; do [ -f "$k" ] && KIT=$k && break; done
  fi
  if [ -f "$(dirname "$0")/tabtrain-worker.mjs" ]; then KITDIR=$(cd "$(dirname "$0")" && pwd)  # run.sh inside an unpacked kit
  elif [ -n "$KIT" ] && [ -f "$KIT" ]; then
    say "unpacking $KIT"
    xz -T0 -dc "$KIT" | tar -C "$WORK" -xf - || { say "cannot unpack $KIT"; exit 1; }
    KITDIR=$WORK/tabtrain-gpu-kit
  else
    say "no kit: build it with bash bench/gpu/make-kit.sh and pass --kit FILE"; exit 1
  fi
fi
K=$KITDIR
NODE=$K/bin/node
export TABTRAIN_DAWN_NODE=$K/lib/dawn.node
DATA=$K/data
for f in "$DATA"/*-ubyte; do [ -f "$f.gz" ] || gzip -1 -c "$f" > "$f.gz"; done

# ---- graphics libraries: the Vulkan loader and the GPU's ICD ----
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
  say "no libvulkan.so.1 on this machine: using the kit's (Debian's libvulkan1)"
  for d in "$K"/debs/*.deb; do [ -f "$d" ] && dpkg -x "$d" "$K/sys"; done
  export LD_LIBRARY_PATH=$K/sys/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# Dawn's OpenGL fallback dlopens the unversioned libEGL.so: put one beside dawn.node.
EGL1=$(ldconfig -p 2>/dev/null | awk '/libEGL.so.1 .*x86-64/ {print $NF; exit}')
[ -z "$EGL1" ] && [ -f "$K/sys/usr/lib/x86_64-linux-gnu/libEGL.so.1" ] && EGL1=$K/sys/usr/lib/x86_64-linux-gnu/libEGL.so.1
[ -n "$EGL1" ] && ln -sf "$EGL1" "$K/lib/libEGL.so"
ICD_SYS=$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null | head -1)
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json VK_ICD_FILENAMES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  say "Vulkan ICD: $VK_DRIVER_FILES"
elif [ -n "$ICD_SYS" ]; then say "Vulkan ICDs: $(ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | tr '\n' ' ')"; fi
if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$WORK}

GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
[ -z "$GPU" ] && GPU="no NVIDIA GPU (nvidia-smi absent)"
say "GPU: $GPU; node $("$NODE" --version); kit $(sed -n 2p "$K/MANIFEST.txt" 2>/dev/null)"

if [ $SMOKE = 1 ]; then
  MODELS="vgg11-tiny alexnet-tiny"; BATCH=16; STEPS=3; CMODEL=vgg11-tiny; CSECONDS=20; TORCH_ARGS="--batch 2 --steps 1 --warmup 1"
  # AlexNet's and VGG's kernel sizes, strides and paddings at 65² / 32² input, batch 4: llvmpipe-sized.
  LAYER_ARGS="--batch 4 --peak-size 256 --bw-mb 16 --reps 3 --budget-ms 500 alexnet-small vgg11-small"
else
  MODELS="alexnet vgg11"; STEPS=10; CMODEL=alexnet; TORCH_ARGS="--batch $BATCH"
  LAYER_ARGS="--batch $BATCH --peak-size 4096 --bw-mb 256 --reps 5 --budget-ms 1000 alexnet vgg11"
fi

# ---- which adapter: Vulkan first (a GPU), the OpenGL path only if that fails ----
: "${TABTRAIN_DAWN_BACKEND:=vulkan}"
export TABTRAIN_DAWN_BACKEND
if ! timeout 120 "$NODE" "$K/worker-bench.mjs" --probe --json "$WORK/probe.json"; then
  say "Dawn found no Vulkan adapter (its warnings are above); trying its OpenGL backend"
  export TABTRAIN_DAWN_BACKEND=opengl
  timeout 120 "$NODE" "$K/worker-bench.mjs" --probe --json "$WORK/probe.json" || say "no WebGPU adapter at all: (b) and (c) will fail"
fi

# ---- (a) PyTorch ----
say "(a) PyTorch"
PY=${PYTHON:-python3}
if [ $SMOKE = 1 ] && ! $PY -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then TORCH_ARGS="$TORCH_ARGS --device cpu"; fi
timeout 180 $PY "$K/torch_bench.py" --data "$DATA" $TORCH_ARGS --json "$WORK/torch.json" || say "(a) failed or timed out"

# ---- (b) the WebGPU worker alone ----
say "(b) tabtrain WebGPU worker, batch $BATCH: $MODELS"
timeout 240 "$NODE" "$K/worker-bench.mjs" --batch $BATCH --steps $STEPS --warmup 2 --profile --data "$DATA" --json "$WORK/worker.json" $MODELS || say "(b) failed or timed out"
# A/B on the first model, forward+backward only: tfjs's own weight-gradient kernel instead of
# tabtrain's split-K one, and the input-gradient kernel the worker does not choose here (it takes
# tfjs's matmul-based one on Vulkan, the naive one on OpenGL/llvmpipe: client/src/dawn.ts).
M1=${MODELS%% *}
OTHER_DX=mm; [ "$TABTRAIN_DAWN_BACKEND" = vulkan ] && OTHER_DX=naive
TABTRAIN_WEBGPU_KERNELS=tfjs timeout 150 "$NODE" "$K/worker-bench.mjs" --batch $BATCH --steps 5 --warmup 1 --modes noread --data "$DATA" --json "$WORK/variant-tfjs-dW.json" $M1 || say "(b) variant tfjs-dW failed or timed out"
TABTRAIN_WEBGPU_DX=$OTHER_DX timeout 150 "$NODE" "$K/worker-bench.mjs" --batch $BATCH --steps 5 --warmup 1 --modes noread --data "$DATA" --json "$WORK/variant-dX.json" $M1 || say "(b) variant $OTHER_DX-dX failed or timed out"
timeout 90 "$NODE" "$K/io-bench.mjs" --reps 3 --json "$WORK/io.json" $MODELS || say "(b) io-bench failed or timed out"
# At most 150 s, less if (a) and (b) ran long: (c) keeps at least 30 s plus its 120 s margin.
B2=$((570 - (SECONDS - START) - 150)); [ $B2 -gt 150 ] && B2=150; [ $B2 -lt 30 ] && B2=30
say "(b2) layer-bench, at most $B2 s: $LAYER_ARGS"
timeout $B2 "$NODE" "$K/layer-bench.mjs" $LAYER_ARGS --data "$DATA" --json "$WORK/layers.json" || say "(b2) layer-bench failed or timed out (what it measured is kept)"

# ---- (c) a real run: coordinator + 2 Dawn workers ----
# Keep the whole script under 10 minutes: shrink (c) if (a) and (b) took long.
LEFT=$((570 - (SECONDS - START) - 60))
[ $SMOKE = 0 ] && [ $LEFT -lt $CSECONDS ] && CSECONDS=$((LEFT > 30 ? LEFT : 30)) && say "(c) shortened to $CSECONDS s"
say "(c) coordinator + 2 Dawn workers, $CMODEL, batch $BATCH, $CSECONDS s"
timeout $((CSECONDS + 120)) "$NODE" "$K/train-bench.mjs" --model $CMODEL --batch $BATCH --workers 2 --seconds $CSECONDS \
  --worker-entry "$K/tabtrain-worker.mjs" --data "$DATA" --json "$WORK/train.json" || say "(c) failed or timed out"

# ---- report ----
NOTE=""; [ $SMOKE = 1 ] && NOTE="SMOKE RUN (tiny models, batch $BATCH): not a benchmark."
"$NODE" "$K/report.mjs" --gpu "$GPU" --probe "$WORK/probe.json" --torch "$WORK/torch.json" --worker "$WORK/worker.json" --io "$WORK/io.json" \
  --train "$WORK/train.json" --layers "$WORK/layers.json" --variants "tfjs-dW=$WORK/variant-tfjs-dW.json,$OTHER_DX-dX=$WORK/variant-dX.json" --json "$OUTDIR/gpu-bench.json" ${NOTE:+--note "$NOTE"} > "$OUTDIR/BENCHMARKS-gpu.md"
cat "$OUTDIR/BENCHMARKS-gpu.md"
if [ -z "$APPEND" ] && [ -d docs ] && [ -f package.json ] && grep -q '"name": "tabtrain"' package.json; then APPEND=docs/BENCHMARKS.md; fi
if [ -n "$APPEND" ] && [ $SMOKE = 0 ]; then { echo; cat "$OUTDIR/BENCHMARKS-gpu.md"; } >> "$APPEND"; say "appended to $APPEND"; fi
say "done in $((SECONDS - START)) s; results in $OUTDIR"
