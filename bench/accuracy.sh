#!/usr/bin/env bash
# Test accuracy of every --compress mode on real Fashion-MNIST: the same model, seed, data order
# and steps (alexnet-small, batch 32, 2 epochs, 2 local wasm workers, equal shards), one run after
# another. About 4 minutes per mode on a 2-core CPU. Summaries go to bench/results/accuracy/.
#   bash bench/accuracy.sh [EPOCHS] [MODES...]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-2}; shift || true
modes=("${@:-none fp16 int8 powersgd}")
out=bench/results/accuracy
mkdir -p "$out"
for mode in ${modes[@]}; do
  echo "== --compress $mode, $epochs epochs"
  bin/tabtrain serve --model alexnet-small --batch 32 --epochs "$epochs" --seed 42 --balance equal \
    --compress "$mode" --local-workers 2 --min-workers 2 --port 0 --summary "$out/alexnet-small-${epochs}epochs-$mode.json"
done
node -e '
const fs = require("fs"); const dir = process.argv[1]; const epochs = process.argv[2];
const rows = ["none", "fp16", "int8", "powersgd"].map((m) => [m, `${dir}/alexnet-small-${epochs}epochs-${m}.json`]).filter(([, f]) => fs.existsSync(f));
const acc = (f) => JSON.parse(fs.readFileSync(f)).epochs.map((e) => e.testAcc);
const base = acc(rows.find(([m]) => m === "none")?.[1] ?? rows[0][1]);
for (const [m, f] of rows) { const a = acc(f); console.log(`${m.padEnd(9)} test acc per epoch ${a.map((x) => x.toFixed(4)).join(", ")}; last vs none ${(100 * (a[a.length - 1] - base[base.length - 1])).toFixed(2)} points`); }
' "$out" "$epochs"
