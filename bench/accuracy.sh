#!/usr/bin/env bash
# Test accuracy of every --compress mode on real Fashion-MNIST: the same model, seed, data order
# and steps (alexnet-small, batch 32, 2 local wasm workers, equal shards), one run after another.
# About 4 minutes per mode and 2 epochs on a 2-core CPU. Summaries go to bench/results/accuracy/.
#   bash bench/accuracy.sh [EPOCHS [MODES...]]        SEED=43 bash bench/accuracy.sh   (default seed 42)
#   RANK=2 bash bench/accuracy.sh 2 powersgd            powersgd at rank 2 (default 4; files say -r2)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-2}; shift || true
modes=${*:-none fp16 int8 powersgd}
seed=${SEED:-42}
rank=${RANK:-4}
suffix=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
rsuffix=$([ "$rank" = 4 ] && echo "" || echo "-r$rank")
out=bench/results/accuracy
mkdir -p "$out"
for mode in $modes; do
  r=$([ "$mode" = powersgd ] && echo "$rsuffix" || echo "")
  echo "== --compress $mode${r:+ --rank $rank}, $epochs epochs, seed $seed"
  bin/tabtrain serve --model alexnet-small --batch 32 --epochs "$epochs" --seed "$seed" --balance equal \
    --compress "$mode" --rank "$rank" --local-workers 2 --min-workers 2 --port 0 --summary "$out/alexnet-small-${epochs}epochs-$mode$r$suffix.json"
done
node -e '
const fs = require("fs"); const [dir, epochs, suffix] = process.argv.slice(1);
const file = (m) => `${dir}/alexnet-small-${epochs}epochs-${m}${suffix}.json`;
// powersgd at other ranks: powersgd-r1, -r2, -r8 beside the default rank 4.
const acc = (m) => JSON.parse(fs.readFileSync(file(m))).epochs.map((e) => e.testAcc);
const modes = ["none", "fp16", "int8", "powersgd-r1", "powersgd-r2", "powersgd", "powersgd-r8"].filter((m) => fs.existsSync(file(m)));
const base = modes.includes("none") ? acc("none").at(-1) : null;
for (const m of modes) {
  const a = acc(m);
  console.log(`${m.padEnd(9)} test acc per epoch ${a.map((x) => x.toFixed(4)).join(", ")}${base === null ? "" : `; last vs none ${(100 * (a.at(-1) - base)).toFixed(2)} points`}`);
}
' "$out" "$epochs" "$suffix"
