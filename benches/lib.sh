# Shared by the bench scripts (sourced, not run).

# bench_bin NAME: builds the `[[bench]]` target NAME (harness = false) and prints its executable.
bench_bin() {
    cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m.get("target",{}).get("name")==sys.argv[1]: print(m["executable"])' "$1"
}
