#!/bin/busybox sh
# /init of the QEMU test guest (copied into the initramfs by tests/vm/run).
# Loads the modules for the mode named on the kernel command line (vmtest=vfio|uio), binds QEMU's
# edu device (1234:11e8) to vfio-pci or uio_pci_generic, runs vm_guest (the driver's own hw
# modules) and the quantis-driver CLI against it, prints PASS/FAIL/SKIP lines and one
# "VMTEST-RESULT <mode> PASS|FAIL" line, and powers off.
/bin/busybox --install -s /bin
echo  # end whatever the kernel left unterminated on the console
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail=0
pass() { echo "PASS $*"; }
failed() { echo "FAIL $*"; fail=1; }
finish() {
    echo "guest: checks done at $(cut -d' ' -f1 /proc/uptime) s of guest uptime"
    if [ "$fail" = 0 ]; then echo "VMTEST-RESULT $mode PASS"; else echo "VMTEST-RESULT $mode FAIL"; fi
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 5
}

echo "guest: init started at $(cut -d' ' -f1 /proc/uptime) s of guest uptime"
mode=$(sed -n 's/.*vmtest=\([a-z]*\).*/\1/p' /proc/cmdline)
arg() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" /proc/cmdline; }

# virtio-rng guests: read /dev/hwrng (fed by QEMU's rng-egd or rng-random backend) and print the
# bytes in hex for the host to place in the card's stream (tests/tests/vm.rs).
case "$mode" in
egd | rngfile | urandom)
    for m in $(cat /lib/modules/load-virtio.txt); do
        insmod "/lib/modules/$m" || failed "insmod $m"
    done
    i=0
    while [ ! -e /dev/hwrng ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
    cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
    case "$cur" in
    virtio_rng*) pass "/dev/hwrng is $cur" ;;
    *) failed "/dev/hwrng is '$cur', not virtio_rng" ;;
    esac
    n=$(arg hwrng_bytes)
    if [ "$mode" != urandom ]; then
        hex=$(head -c "$n" /dev/hwrng | od -An -v -tx1 | tr -d ' \n')
        if [ ${#hex} -eq $((2 * n)) ]; then pass "read $n bytes from /dev/hwrng"; else failed "read $((${#hex} / 2)) of $n bytes from /dev/hwrng"; fi
        echo "HWRNG $mode $hex"
    fi
    if [ "$(arg vmbench)" = 1 ]; then
        size=$(arg vmbench_bytes)
        t0=$(cut -d' ' -f1 /proc/uptime)
        head -c $size /dev/hwrng >/dev/null
        t1=$(cut -d' ' -f1 /proc/uptime)
        echo "BENCH $mode hwrng bytes=$size seconds=$(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}')"
    fi
    finish
    ;;
feeder)
    # The kernel pool feeder at boot (docs/feeder.md). The guest runs without CPU or bootloader
    # randomness it trusts, so its CRNG is not ready yet; the kernel readies it at 256 credited
    # bits: at 2 bits a byte, two 64-byte additions.
    before=$(qrng-feeder --status)
    if [ "$before" = crng_ready=0 ]; then
        pass "CRNG not ready at boot: getrandom(GRND_NONBLOCK) fails with EAGAIN"
    else
        echo "SKIP CRNG already ready at boot ($before): the feeder cannot be shown to ready it"
    fi
    out=$(qrng-feeder --source file:/feeder-data.bin --once --chunk 64 --bits-per-byte 2 2>/tmp/feeder.err)
    rc=$?
    echo "FEEDER boot $out"
    sed 's/^/guest: /' /tmp/feeder.err
    want="bytes_read=128 bytes_credited=128 bits_credited=256 ioctl_errors=0 source_errors=0 crng_ready=1"
    if [ "$before" = crng_ready=0 ]; then
        if [ $rc -eq 0 ] && [ "$out" = "$want" ]; then
            pass "RNDADDENTROPY accepted; 2 x 64 bytes at 128 bits each made the CRNG ready ($out)"
        else
            failed "feeder at boot (exit $rc): '$out', want '$want'"
        fi
    fi
    after=$(qrng-feeder --status)
    [ "$after" = crng_ready=1 ] && pass "getrandom(GRND_NONBLOCK) succeeds after the feeder" || failed "after the feeder: $after"
    # Ready now: --once adds one chunk, credited at the stated 8 bits a byte.
    out=$(qrng-feeder --source file:/feeder-data.bin --once --chunk 64 --bits-per-byte 8 2>/dev/null)
    rc=$?
    want="bytes_read=64 bytes_credited=64 bits_credited=512 ioctl_errors=0 source_errors=0 crng_ready=1"
    if [ $rc -eq 0 ] && [ "$out" = "$want" ]; then pass "a periodic addition is accepted ($out)"; else failed "periodic addition (exit $rc): '$out', want '$want'"; fi
    finish
    ;;
esac

case "$mode" in
vfio) driver=vfio-pci ;;
uio) driver=uio_pci_generic ;;
*) mode=unknown; failed "no vmtest= mode on the kernel command line"; finish ;;
esac

# The vfio guest also loads uio: a second device in a shared IOMMU group is bound to it.
lists=/lib/modules/load-$mode.txt
[ "$mode" = vfio ] && lists="$lists /lib/modules/load-uio.txt"
for m in $(cat $lists); do
    insmod "/lib/modules/$m" || failed "insmod $m"
done

# edu devices, in address order: the first (on the root bus) is the one under test; the vfio
# guest has two more behind a PCIe-to-PCI bridge, sharing one IOMMU group.
edus=
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then edus="$edus ${d##*/}"; fi
done
set -- $edus
addr=${1:-}
[ -n "$addr" ] || { failed "no edu device (1234:11e8) on the PCI bus"; finish; }

bind() { # bind ADDRESS DRIVER
    echo "$2" >"/sys/bus/pci/devices/$1/driver_override"
    echo "$1" >/sys/bus/pci/drivers_probe
    bound=$(basename "$(readlink "/sys/bus/pci/devices/$1/driver")")
    [ "$bound" = "$2" ] && pass "edu $1 bound to $2" || failed "edu $1 bound to '$bound', not $2"
}
bind "$addr" "$driver"

# devtmpfs creates the nodes asynchronously: wait up to 1 s.
if [ "$mode" = vfio ]; then
    node=/dev/vfio/$(basename "$(readlink "/sys/bus/pci/devices/$addr/iommu_group")")
else
    node=/dev/$(ls "/sys/bus/pci/devices/$addr/uio" 2>/dev/null | head -n 1)
fi
i=0
while [ ! -e "$node" ] && [ $i -lt 20 ]; do sleep 0.05; i=$((i + 1)); done
[ -e "$node" ] || failed "$node did not appear"

/usr/bin/vm_guest "$mode" "$addr" || fail=1

if [ "$mode" = vfio ]; then
    if [ $# -ge 3 ]; then
        bind "$2" vfio-pci
        bind "$3" uio_pci_generic
        /usr/bin/vm_guest vfio-not-viable "$2" "$3" || fail=1
    else
        failed "expected 3 edu devices in the vfio guest, found: $edus"
    fi
fi

# The CLI against a device that is not a Quantis card: cli_check SUBCOMMAND WANT_EXIT PATTERN ARGS...
# (WANT_EXIT: "zero" or "nonzero"). Skipped when the binary has no such subcommand.
cli_check() {
    sub=$1 want=$2 pattern=$3
    shift 3
    if ! quantis-driver --help 2>&1 | grep -q "\b$sub\b"; then
        echo "SKIP quantis-driver $sub: this build has no $sub subcommand"
        return
    fi
    cmd="quantis-driver $sub $*"
    cmd=${cmd% }
    out=$(quantis-driver "$sub" "$@" 2>&1)
    rc=$?
    ok=1
    if [ "$want" = zero ]; then [ $rc -eq 0 ] || ok=0; else [ $rc -ne 0 ] || ok=0; fi
    echo "$out" | grep -qi "$pattern" || ok=0
    if [ $ok = 1 ]; then
        pass "$cmd: $(echo "$out" | grep -i "$pattern" | head -n 1)"
    else
        failed "$cmd (exit $rc, want $want exit and \"$pattern\"): $out"
    fi
}
cli_check probe nonzero "not a Quantis card" --device "$mode:$addr"
cli_check list zero "no Quantis card found"

finish
