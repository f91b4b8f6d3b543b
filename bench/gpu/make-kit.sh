#!/usr/bin/env bash
# Builds the GPU comparison kit: one .tar.xz that runs on a lent GPU machine with no package
# registry (see docs/GPU.md). Run from a tabtrain checkout after `npm ci`, on linux-x64:
#
#   bash bench/gpu/make-kit.sh [OUT_DIR]        (default: artifacts/gpu-kit, git-ignored)
#
# The kit (tabtrain-gpu-kit/ inside the tarball):
#   bin/node             this machine's Node (process.execPath), symbols stripped; xz compresses it
#   tabtrain.mjs         the CLI (serve, bench), bundled with esbuild into one file
#   tabtrain-worker.mjs  `tabtrain worker` (client/src/worker-cli.ts), bundled likewise
#   worker-bench.mjs     (b) forward+backward examples/s of the WebGPU worker
#   io-bench.mjs         weight upload / gradient readback alone
#   layer-bench.mjs      (b2) per-layer kernels, the matmul peak, bandwidths, a step's split
#   train-bench.mjs      (c) coordinator + N Dawn workers on real Fashion-MNIST
#   report.mjs           merges the JSON and writes the BENCHMARKS.md section
#   torch_bench.py       (a) PyTorch d2l AlexNet / VGG-11
#   lib/dawn.node        Dawn (npm webgpu) for linux-x64
#   debs/*.deb           the Vulkan loader (and EGL/GLVND for the OpenGL fallback), Debian's
#   data/*-ubyte         Fashion-MNIST IDX, uncompressed (xz packs them smaller than the .gz files);
#                        run.sh gzips them back for the loader
#   run.sh               the one script to run there; MANIFEST.txt: versions and sha256 sums
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/artifacts/gpu-kit}
DATA=${TABTRAIN_DATA:-/usr/share/datasets/fashion-mnist}
NODE=$(node -p process.execPath)
[ "$(uname -m)" = x86_64 ] || { echo "make-kit: the GPU machines are x86-64; build the kit on x86-64 (this is $(uname -m))" >&2; exit 1; }
DAWN=$ROOT/node_modules/webgpu/dist/linux-x64/dawn.node
[ -f "$DAWN" ] || { echo "make-kit: $DAWN missing: run npm ci first" >&2; exit 1; }
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$DATA/$f.gz" ] || { echo "make-kit: $DATA/$f.gz missing (apt-get install dataset-fashion-mnist, or TABTRAIN_DATA=DIR)" >&2; exit 1; }
done

STAGE=$OUT/stage/tabtrain-gpu-kit
rm -rf "$OUT/stage"; mkdir -p "$STAGE"/{bin,lib,debs,data}
t0=$SECONDS
echo "make-kit: bundling with esbuild"
# One ESM file per entry. CommonJS dependencies (tfjs's Node builds) need `require`: the banner
# gives them one. Native optional extras of ws and msgpackr stay out (both fall back to JS);
# dawn.node is loaded at run time from TABTRAIN_DAWN_NODE.
"$ROOT/node_modules/esbuild/bin/esbuild" \
  "$ROOT/server/src/cli.ts" "$ROOT/client/src/worker-cli.ts" "$ROOT/bench/gpu/worker-bench.ts" "$ROOT/bench/gpu/io-bench.ts" "$ROOT/bench/gpu/train-bench.ts" "$ROOT/bench/gpu/report.ts" "$ROOT/bench/gpu/layer-bench.ts" \
  --bundle --platform=node --format=esm --target=node20 --outdir="$STAGE" --out-extension:.js=.mjs --entry-names='[name]' \
  --external:bufferutil --external:utf-8-validate --external:msgpackr-extract --external:webgpu \
  --log-level=warning --legal-comments=none \
  --banner:js="import { createRequire as __ttCreateRequire } from 'node:module'; const require = __ttCreateRequire(import.meta.url);"
mv "$STAGE/cli.mjs" "$STAGE/tabtrain.mjs"
mv "$STAGE/worker-cli.mjs" "$STAGE/tabtrain-worker.mjs"

echo "make-kit: node $("$NODE" --version) from $NODE"
if command -v strip >/dev/null && strip -o "$STAGE/bin/node" "$NODE" 2>/dev/null && "$STAGE/bin/node" -e 0; then :; else cp "$NODE" "$STAGE/bin/node"; fi
chmod +x "$STAGE/bin/node"
cp "$DAWN" "$STAGE/lib/dawn.node"
cp "$ROOT/bench/gpu/run.sh" "$ROOT/bench/gpu/torch_bench.py" "$STAGE/"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gunzip -c "$DATA/$f.gz" > "$STAGE/data/$f"
done

echo "make-kit: Debian packages (Vulkan loader; EGL/GLVND for the OpenGL fallback)"
PKGS="libvulkan1 libegl1 libglvnd0"
# amd64 whatever this machine is; a private list dir so the system's apt state is untouched.
APTO="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$OUT/apt-lists -oDir::Cache=$OUT/apt-cache -oDebug::NoLocking=1"
mkdir -p "$OUT/apt-lists/partial" "$OUT/apt-cache/archives/partial"
if (cd "$STAGE/debs" && apt-get download $PKGS >/dev/null 2>&1) || \
   (cd "$STAGE/debs" && apt-get $APTO download $PKGS >/dev/null 2>&1) || \
   (apt-get $APTO update >/dev/null 2>&1 && cd "$STAGE/debs" && apt-get $APTO download $PKGS >/dev/null); then
  ls "$STAGE/debs"
else
  echo "make-kit: WARNING: could not download $PKGS; the kit relies on the GPU machine's own libvulkan.so.1" >&2
fi

(
  cd "$STAGE"
  echo "tabtrain GPU kit, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  echo "tabtrain commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "node: $(bin/node --version); webgpu (Dawn) npm package: $(node -p "require('$ROOT/node_modules/webgpu/package.json').version")"
  echo "tfjs-backend-webgpu: $(node -p "require('$ROOT/node_modules/@tensorflow/tfjs-backend-webgpu/package.json').version")"
  echo
  find . -type f ! -name MANIFEST.txt -print0 | sort -z | xargs -0 sha256sum
) > "$STAGE/MANIFEST.txt"

echo "make-kit: compressing (xz)"
KIT=$OUT/tabtrain-gpu-kit.tar.xz
tar -C "$OUT/stage" -cf - tabtrain-gpu-kit | xz -T0 -6 > "$KIT.tmp"
mv "$KIT.tmp" "$KIT"
rm -rf "$OUT/stage" "$OUT/apt-cache" "$OUT/apt-lists"   # only the tarball travels (device tool: carry artifacts/gpu-kit)
BYTES=$(stat -c %s "$KIT")
echo "make-kit: $KIT: $((BYTES / 1048576)) MiB in $((SECONDS - t0)) s"
# The device tool carries at most 64 MiB (kit + working tree) per call.
[ "$BYTES" -lt $((60 * 1048576)) ] || echo "make-kit: WARNING: over 60 MiB; the device tool carries at most 64 MiB in all" >&2
