#!/usr/bin/env bash
# Runs Debian's external randomness test tools on a file of conditioned output and judges them
# with fixed, documented criteria (docs/entropy.md, "External tools"):
#   rngtest (rng-tools5): FIPS 140-2 on 20,000-bit blocks. About 1 block in 1000 fails on perfect
#            data (and rngtest then exits 1), so it is judged by ratio: pass if at least 1000
#            blocks were tested and failures / blocks <= 0.005.
#   ent:     entropy >= 7.999 bits/byte; chi-square "would exceed" percentage in (0.1, 99.9);
#            |serial correlation| < 0.005; Monte Carlo pi within 0.5 % of pi.
#   dieharder: a short selection that fits in 8 MB without rewinding the file (a rewound file
#            repeats data and invalidates the p-values): -d 0 (birthdays), 2 (rank 32x32),
#            3 (rank 6x8), 8 (count the 1s, stream), 15 (runs), 100 (sts monobit), 101 (sts runs);
#            pass if no test says FAILED (WEAK, p outside [0.005, 0.995], happens to 1 % of
#            good tests and is allowed) and the file was never rewound.
# Usage: entropy-tools.sh FILE   (FILE: at least 8,000,000 bytes)
# Exit: 0 pass, 1 fail, 2 usage error, 77 a tool is not installed (apt: rng-tools5 ent dieharder).
set -euo pipefail

file=${1:?usage: entropy-tools.sh FILE}
for tool in rngtest ent dieharder; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not installed (apt-get install rng-tools5 ent dieharder)"
        exit 77
    fi
done
size=$(stat -c %s "$file")
if [ "$size" -lt 8000000 ]; then
    echo "error: $file has $size bytes; need at least 8000000" >&2
    exit 2
fi
fail=0

# --- rngtest ---
out=$(rngtest <"$file" 2>&1 || true)
ok=$(printf '%s\n' "$out" | sed -n 's/.*FIPS 140-2 successes: \([0-9]*\).*/\1/p')
bad=$(printf '%s\n' "$out" | sed -n 's/.*FIPS 140-2 failures: \([0-9]*\).*/\1/p')
ok=${ok:-0}
bad=${bad:-0}
blocks=$((ok + bad))
if [ "$blocks" -ge 1000 ] && [ $((bad * 1000)) -le $((blocks * 5)) ]; then
    echo "rngtest: PASS ($bad of $blocks blocks failed)"
else
    echo "rngtest: FAIL ($bad of $blocks blocks failed; allowed <= 0.5 % of >= 1000)"
    fail=1
fi

# --- ent ---
csv=$(ent -t "$file" | tail -n 1)
IFS=, read -r _ _ entropy _ mean pi serial <<<"$csv"
pct=$(ent "$file" | sed -n 's/.*would exceed this value \([0-9.]*\) percent.*/\1/p')
if awk -v e="$entropy" -v p="${pct:-}" -v s="$serial" -v pi="$pi" 'BEGIN {
        ok = (e >= 7.999) && (p != "") && (p > 0.1) && (p < 99.9) &&
             (s < 0.005) && (s > -0.005) && (pi > 3.14159265 * 0.995) && (pi < 3.14159265 * 1.005);
        exit ok ? 0 : 1 }'; then
    echo "ent: PASS (entropy $entropy, chi-square $pct %, mean $mean, pi $pi, serial $serial)"
else
    echo "ent: FAIL (entropy $entropy, chi-square ${pct:-extreme} %, mean $mean, pi $pi, serial $serial)"
    fail=1
fi

# --- dieharder ---
for args in "0 -t 100 -p 3" "2 -t 10000 -p 5" "3 -t 20000 -p 10" "8 -t 100000 -p 5" \
    "15 -t 10000 -p 50" "100 -t 10000 -p 50" "101 -t 10000 -p 50"; do
    # shellcheck disable=SC2086
    res=$(dieharder -g 201 -f "$file" -d $args 2>&1 || true)
    lines=$(printf '%s\n' "$res" | grep -E 'PASSED|WEAK|FAILED' || true)
    if [ -z "$lines" ] || printf '%s\n' "$res" | grep -q 'FAILED\|rewound'; then
        echo "dieharder -d $args: FAIL"
        printf '%s\n' "$res" | grep -E 'PASSED|WEAK|FAILED|rewound' || true
        fail=1
    else
        printf '%s\n' "$lines" | awk -v a="$args" '{printf "dieharder -d %s: %s\n", a, $0}'
    fi
done

if [ "$fail" -eq 0 ]; then
    echo "external tools: PASS"
else
    echo "external tools: FAIL"
fi
exit "$fail"
