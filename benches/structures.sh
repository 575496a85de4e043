#!/usr/bin/env bash
# Instructions per connection for each phase of benches/structures.rs (insert, event, re-arm,
# close, expire) at 10,000, 100,000 and 1,000,000 simulated connections, counted by callgrind:
# exact and repeatable whatever else the machine runs. Results in docs/benchmarks.md.
#
#   benches/structures.sh               # all three sizes (the largest takes a minute or two)
#   SIZES="10000 100000" benches/structures.sh
#
# Each size is one run of `structures --once N` under `valgrind --tool=callgrind`; a phase's
# figure is the inclusive count of its function (summed over the places its inlined code comes
# from), divided by N. Cache misses do not show here: see the clock ratios of
# `cargo bench --bench structures` for those. The figures also go to target/structures/phases.jsonl,
# which `cargo bench --bench plot` draws beside benches/idle.sh's socket figures.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-10000 100000 1000000}
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >&2
OUT=target/structures
mkdir -p "$OUT"
# shellcheck source=benches/lib.sh
. benches/lib.sh
BIN=$(bench_bin structures)
[ -x "$BIN" ] || { echo "structures.sh: cannot build benches/structures.rs" >&2; exit 1; }
: >"$OUT/phases.jsonl"
echo "| connections | insert | event | re-arm | close | expire | (instructions per connection) |"
echo "|---:|---:|---:|---:|---:|---:|---|"
for n in $SIZES; do
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$n" "$BIN" --once "$n" >"$OUT/once.$n" 2>"$OUT/valgrind.$n"
    callgrind_annotate --inclusive=yes --threshold=100 "$OUT/callgrind.$n" 2>/dev/null | python3 -c '
import json, re, sys
n = int(sys.argv[1])
total = {p: 0 for p in ("insert", "event", "rearm", "close", "expire")}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+)\s.*:structures::phase_(\w+)\b", line)
    if m and m.group(2) in total:
        total[m.group(2)] += int(m.group(1).replace(",", ""))
cells = " | ".join(f"{total[p] / n:,.0f}" for p in total)
print(f"| {n:,} | {cells} | |")
bytes = None
for l in open(sys.argv[2]):
    m = re.match(r"(\d+) connections: ([\d.]+) B each", l)
    if m:
        bytes = float(m.group(2))
with open(sys.argv[3], "a") as f:
    f.write(json.dumps(dict(conns=n, bytes=bytes, **{p: total[p] / n for p in total})) + "\n")' "$n" "$OUT/once.$n" "$OUT/phases.jsonl"
done
grep -h "connections:" "$OUT"/once.* || true
