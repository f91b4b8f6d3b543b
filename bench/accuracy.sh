#!/usr/bin/env bash
# Test accuracy of every --compress mode on real Fashion-MNIST: the same model, seed, data order
# and steps (alexnet-small, batch 32, 2 local wasm workers, equal shards), one run after another.
# About 4 minutes per mode and 2 epochs on a 2-core CPU. Summaries go to bench/results/accuracy/.
#   bash bench/accuracy.sh [EPOCHS [MODES...]]        SEED=43 bash bench/accuracy.sh   (default seed 42)
#   RANK=2 bash bench/accuracy.sh 2 powersgd            powersgd at rank 2 (default 4; files say -r2)
#   LINK=100mbit bash bench/accuracy.sh 2 auto          through emulated links (below); files say -100mbit
# MODES: none fp16 int8 powersgd (the default list), and auto (serve's default: the coordinator
# picks the mode from measured links; its summary's "modes" says which ran at which steps).
# LINK=RATE runs the coordinator and each worker in its own network namespace, joined by veth links
# shaped with tc at RATE each way (server/src/bench/lab-serve.ts, netns.ts), and removes them on
# exit and Ctrl-C. It needs root and iproute2. Without LINK the workers are on loopback, which
# auto prices as link-free: it stays in fp32 there. Each LINK run's log, without its progress
# lines and with the run's token redacted, goes beside its summary (.txt): the coordinator's
# "compression …" choices are in it.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
epochs=${1:-2}; shift || true
modes=${*:-none fp16 int8 powersgd}
seed=${SEED:-42}
rank=${RANK:-4}
link=${LINK:-}
suffix=$([ "$seed" = 42 ] && echo "" || echo "-seed$seed")
rsuffix=$([ "$rank" = 4 ] && echo "" || echo "-r$rank")
lsuffix=${link:+-$link}
out=bench/results/accuracy
if [ -n "$link" ]; then
  [ "$(id -u)" = 0 ] || { echo "accuracy.sh: LINK=$link needs root to make network namespaces (this is uid $(id -u)): run it with sudo, or without LINK for loopback" >&2; exit 2; }
  command -v ip >/dev/null && command -v tc >/dev/null || { echo "accuracy.sh: LINK=$link needs 'ip' and 'tc' (apt-get install iproute2), or run without LINK for loopback" >&2; exit 2; }
fi
mkdir -p "$out"
for mode in $modes; do
  r=$([ "$mode" = powersgd ] && echo "$rsuffix" || echo "")
  name="$out/alexnet-small-${epochs}epochs-$mode$r$lsuffix$suffix"
  echo "== --compress $mode${r:+ --rank $rank}, $epochs epochs, seed $seed${link:+, links $link}"
  serve=(--model alexnet-small --batch 32 --epochs "$epochs" --seed "$seed" --balance equal
    --compress "$mode" --rank "$rank" --min-workers 2 --summary "$name.json")
  if [ -z "$link" ]; then
    bin/tabtrain serve "${serve[@]}" --local-workers 2 --port 0
  else
    node --import ./node_modules/tsx/dist/loader.mjs server/src/bench/lab-serve.ts --link "$link" --workers 2 -- "${serve[@]}" \
      | tee >(grep -v ' epoch [0-9]*/[0-9]* step ' | sed -E 's/(token[= ])[A-Za-z0-9_-]{8,}/\1<redacted>/g' > "$name.txt")
  fi
done
node -e '
const fs = require("fs"); const [dir, epochs, suffix, lsuffix] = process.argv.slice(1);
const file = (m) => `${dir}/alexnet-small-${epochs}epochs-${m}${suffix}.json`;
// powersgd at other ranks: powersgd-r1, -r2, -r8 beside the default rank 4; auto through links: auto-RATE.
const acc = (m) => JSON.parse(fs.readFileSync(file(m))).epochs.map((e) => e.testAcc);
const modes = ["none", "fp16", "int8", "powersgd-r1", "powersgd-r2", "powersgd", "powersgd-r8", "auto", ...(lsuffix ? [`auto${lsuffix}`] : [])].filter((m) => fs.existsSync(file(m)));
const base = modes.includes("none") ? acc("none").at(-1) : null;
for (const m of modes) {
  const a = acc(m);
  // Which modes ran, as a share of the steps (summaries since --compress auto record it).
  const spans = JSON.parse(fs.readFileSync(file(m))).modes ?? [];
  const total = spans.reduce((s, x) => s + x.steps, 0);
  const share = m.startsWith("auto") && total ? `; ${[...new Set(spans.map((x) => x.mode))].map((k) => `${k} ${(100 * spans.filter((x) => x.mode === k).reduce((s, x) => s + x.steps, 0) / total).toFixed(2)}%`).join(", ")} of ${total} steps` : "";
  console.log(`${m.padEnd(9)} test acc per epoch ${a.map((x) => x.toFixed(4)).join(", ")}${base === null ? "" : `; last vs none ${(100 * (a.at(-1) - base)).toFixed(2)} points`}${share}`);
}
' "$out" "$epochs" "$suffix" "$lsuffix"
