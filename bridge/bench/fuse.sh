#!/usr/bin/env bash
# FUSE device-file benchmark: dd from the qrng0 file served by qrng-bridge from a simulated
# PCIe-240M card running flat out (sim:pcie-240m?rate=0), with baselines from the same run.
#
#   bridge/bench/fuse.sh                 # needs root (FUSE mount); builds the release binaries
#   RING=256M SUSTAINED_MB=2048 SMALL_COUNT=50000 bridge/bench/fuse.sh
#
# Prints (each dd line as dd reports it):
#   baseline  dd bs=1M from a tmpfs file: the kernel's copy ceiling on this machine;
#   burst     dd bs=1M of a ring the driver had filled beforehand: the FUSE + dispenser path alone,
#             not limited by the source (target >= 2 GB/s);
#   sustained dd bs=1M of SUSTAINED_MB MiB, and the driver's publish rate meanwhile (the source);
#   4k        dd bs=4k: one FUSE round trip per 4 KiB, the per-request cost.
set -euo pipefail

RING=${RING:-256M}
SUSTAINED_MB=${SUSTAINED_MB:-2048}
SMALL_COUNT=${SMALL_COUNT:-50000}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /dev/shm/qrng-fuse-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    umount -l "$WORK/dev" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "needs root (mounts FUSE)" >&2; exit 2; }
(cd "$ROOT" && cargo build --release -q -p quantis-driver -p qrng-bridge)
ring_mib=$(( $(numfmt --from=iec "$RING") >> 20 ))

# dd's summary line, e.g. "268435456 bytes (268 MB, 256 MiB) copied, 0.1 s, 2.4 GB/s".
ddrate() { dd "$@" 2>&1 >/dev/null | tail -1; }

# One field of the qrng0 entry of /api/v1/devices (plain bash HTTP, no curl needed).
field() {
    local body
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'GET /api/v1/devices HTTP/1.0\r\nHost: x\r\n\r\n' >&3
    body=$(cat <&3)
    exec 3<&-
    sed -n "s/.*\"$1\":\([0-9.e+]*\).*/\1/p" <<<"$body"
}

echo "== baseline: dd bs=1M from a tmpfs file ($RING)"
head -c "$((ring_mib << 20))" /dev/zero >"$WORK/plain"
ddrate if="$WORK/plain" of=/dev/null bs=1M
rm -f "$WORK/plain"

mkdir -p "$WORK/rings"
"$TARGET/release/quantis-driver" --device 'sim:pcie-240m?rate=0' --ring "$WORK/rings/qrng0.ring" \
    --ring-size "$RING" >"$WORK/driver.log" 2>&1 &
pids+=($!)
"$TARGET/release/qrng-bridge" --ring-dir "$WORK/rings" --mount "$WORK/dev" \
    --listen "127.0.0.1:$PORT" >"$WORK/bridge.log" 2>&1 &
pids+=($!)
bridge_pid=$!
for _ in $(seq 400); do [ -e "$WORK/dev/qrng0" ] && break; sleep 0.05; done
alive() { kill -0 "$bridge_pid" 2>/dev/null || { echo "qrng-bridge exited:"; cat "$WORK/bridge.log"; exit 1; }; }
alive
[ -e "$WORK/dev/qrng0" ] || { echo "device file did not appear"; cat "$WORK/bridge.log"; exit 1; }

# Wait until the driver has filled the ring (nobody reads meanwhile).
for _ in $(seq 600); do
    fill=$(field ring_fill || echo 0)
    [ "${fill:-0}" -ge $(((ring_mib - 1) << 20)) ] && break
    sleep 0.1
done
alive
echo "== burst: dd bs=1M of a full ring ($((ring_mib - 1)) MiB; ring fill was ${fill:-?} bytes)"
ddrate if="$WORK/dev/qrng0" of=/dev/null bs=1M count=$((ring_mib - 1))

echo "== sustained: dd bs=1M count=$SUSTAINED_MB"
ddrate if="$WORK/dev/qrng0" of=/dev/null bs=1M count="$SUSTAINED_MB"
echo "   driver publish rate meanwhile: $(field publish_rate_bytes_per_second) bytes/s"

echo "== 4k: dd bs=4k count=$SMALL_COUNT"
ddrate if="$WORK/dev/qrng0" of=/dev/null bs=4k count="$SMALL_COUNT"
