#!/bin/bash
# Wall and CPU time of `quantis-driver assess --sp800-90b` against NIST's ea_non_iid on the same
# files, run alternately (the machine is shared: compare only figures of one run).
#
#   EA_NON_IID=/path/to/ea_non_iid sp800-90b/benches/vs_reference.sh FILE BITS [ROUNDS]
#
# ea_non_iid is NIST's tool (usnistgov/SP800-90B_EntropyAssessment), built separately from its own
# Makefile; its non-IID track runs on one thread (no OpenMP loop), and it runs here with
# OMP_NUM_THREADS=1 as well. quantis-driver is target/release/quantis-driver
# (cargo build --release -p quantis-driver).
set -euo pipefail
file=$1 bits=$2 rounds=${3:-3}
ours=${QUANTIS_DRIVER:-target/release/quantis-driver}
: "${EA_NON_IID:?set EA_NON_IID to the path of the reference ea_non_iid}"
for r in $(seq "$rounds"); do
    /usr/bin/time -f "ours      round $r: %e s wall, %U s user" "$ours" assess --sp800-90b "$file" --bits-per-symbol "$bits" --json >/dev/null
    OMP_NUM_THREADS=1 /usr/bin/time -f "reference round $r: %e s wall, %U s user" "$EA_NON_IID" "$file" "$bits" >/dev/null
done
