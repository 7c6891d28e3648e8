#!/bin/busybox sh
# /init of the QEMU test guest (copied into the initramfs by tests/vm/run).
# Loads the modules for the mode named on the kernel command line (vmtest=vfio|uio), binds QEMU's
# edu device (1234:11e8) to vfio-pci or uio_pci_generic, runs vm_guest (the driver's own hw
# modules) and the quantis-driver CLI against it, prints PASS/FAIL/SKIP lines and one
# "VMTEST-RESULT <mode> PASS|FAIL" line, and powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail=0
pass() { echo "PASS $*"; }
failed() { echo "FAIL $*"; fail=1; }
finish() {
    if [ "$fail" = 0 ]; then echo "VMTEST-RESULT $mode PASS"; else echo "VMTEST-RESULT $mode FAIL"; fi
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 5
}

mode=$(sed -n 's/.*vmtest=\([a-z]*\).*/\1/p' /proc/cmdline)
case "$mode" in
vfio) driver=vfio-pci ;;
uio) driver=uio_pci_generic ;;
*) mode=unknown; failed "no vmtest= mode on the kernel command line"; finish ;;
esac

for m in $(cat /lib/modules/load-$mode.txt); do
    insmod "/lib/modules/$m" || failed "insmod $m"
done

addr=
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then addr=${d##*/}; fi
done
[ -n "$addr" ] || { failed "no edu device (1234:11e8) on the PCI bus"; finish; }

echo "$driver" >"/sys/bus/pci/devices/$addr/driver_override"
echo "$addr" >/sys/bus/pci/drivers_probe
bound=$(basename "$(readlink "/sys/bus/pci/devices/$addr/driver")")
[ "$bound" = "$driver" ] && pass "edu $addr bound to $driver" || failed "edu $addr bound to '$bound', not $driver"

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

# The CLI against a device that is not a Quantis card.
if quantis-driver --help 2>&1 | grep -q '\bprobe\b'; then
    out=$(quantis-driver probe --device "$mode:$addr" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && echo "$out" | grep -qi "not a Quantis card"; then
        pass "quantis-driver probe --device $mode:$addr refuses: $(echo "$out" | tail -n 1)"
    else
        failed "quantis-driver probe --device $mode:$addr (exit $rc): $out"
    fi
else
    echo "SKIP quantis-driver probe: this build has no probe subcommand"
fi
if quantis-driver --help 2>&1 | grep -q '\blist\b'; then
    out=$(quantis-driver list 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && echo "$out" | grep -q "no Quantis card found"; then
        pass "quantis-driver list: $(echo "$out" | head -n 1)"
    else
        failed "quantis-driver list (exit $rc): $out"
    fi
else
    echo "SKIP quantis-driver list: this build has no list subcommand"
fi

finish
