//! Guest-side checks of the real VFIO and UIO access layer against QEMU's `edu` PCI device.
//!
//! Run inside the QEMU guest that `tests/vm/run` boots: `vm_guest vfio <pci-address>` (edu bound
//! to vfio-pci behind an emulated Intel IOMMU) or `vm_guest uio <pci-address>` (edu bound to
//! uio_pci_generic). It drives the device only through `quantis_driver::hw::{vfio, uio}`, the same
//! modules that drive Quantis cards, prints one `PASS`/`FAIL`/`SKIP` line per check and a summary,
//! and exits non-zero if any check failed.
//!
//! edu's registers (QEMU docs/specs/edu.txt; hw/misc/edu.c): BAR0, 1 MiB.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quantis_driver::hw::pci::{cfg, CHIP_CARD_240M, CHIP_CARD_40M, MODULE_CARD};
use quantis_driver::hw::uio::{ensure_uio_can_drive, UioDevice};
use quantis_driver::hw::vfio::{IrqMode, VfioDevice};
use quantis_driver::hw::{Device, Error, PciAddress, PciId};

const EDU: PciId = PciId { vendor: 0x1234, device: 0x11e8 };
const EDU_BAR0_LEN: u64 = 1 << 20;
const REG_ID: u64 = 0x00; // reads 0x010000ed (major 1, minor 0, 0xed)
const EDU_ID: u32 = 0x0100_00ed;
const REG_LIVENESS: u64 = 0x04; // reads back the bitwise inverse of what was written
const REG_IRQ_STATUS: u64 = 0x24;
const REG_IRQ_RAISE: u64 = 0x60;
const REG_IRQ_ACK: u64 = 0x64;
const REG_DMA_SRC: u64 = 0x80;
const REG_DMA_DST: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_CMD: u64 = 0x98;
const DMA_RUN: u32 = 1;
const DMA_TO_RAM: u32 = 2; // direction bit: 1 = device -> RAM
const DMA_IRQ: u32 = 4; // raise interrupt 0x100 when done
const IRQ_DMA_DONE: u32 = 0x100;
/// edu's own 4 KiB DMA buffer, as seen in its DMA address space.
const EDU_BUF: u64 = 0x40000;
/// QEMU 7.2's edu aborts on a 4096-byte transfer (off-by-one range check): stay one short.
const DMA_LEN: usize = 4095;

struct Report {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Report {
    fn check(&mut self, name: &str, r: Result<String, String>) -> bool {
        match r {
            Ok(detail) => {
                self.passed += 1;
                println!(
                    "PASS {name}{}",
                    if detail.is_empty() { String::new() } else { format!(": {detail}") }
                );
                true
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
                false
            }
        }
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.skipped += 1;
        println!("SKIP {name}: {why}");
    }
}

fn e(err: Error) -> String {
    err.to_string()
}

/// A fixed pseudo-random pattern (xorshift64, fixed seed): every byte position differs from its
/// neighbours so a shifted or partial copy is caught.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reports an open's outcome; the device if it opened.
fn opened<T>(
    rep: &mut Report,
    name: &str,
    r: Result<T, Error>,
    describe: impl Fn(&T) -> String,
) -> Option<T> {
    match r {
        Ok(d) => {
            rep.check(name, Ok(describe(&d)));
            Some(d)
        }
        Err(err) => {
            rep.check(name, Err(e(err)));
            None
        }
    }
}

/// Identity, BAR0 and register checks shared by both backends.
fn check_basics(dev: &mut dyn Device, rep: &mut Report, id_source: &str, bar0_mapped: bool) {
    let id = dev.info().id;
    rep.check(
        &format!("vendor/device from {id_source}"),
        if id == EDU { Ok(id.to_string()) } else { Err(format!("read {id}, want {EDU}")) },
    );
    rep.check(
        "BAR0 region info and mmap",
        match (dev.info().bars[0], bar0_mapped) {
            (Some(EDU_BAR0_LEN), true) => Ok("1 MiB, mmapped".into()),
            other => Err(format!("BAR0 (size, mapped) = {other:?}, want (Some(1 MiB), true)")),
        },
    );
    check_id_and_liveness(dev, rep);
    check_bounds(dev, rep);
}

fn check_id_and_liveness(dev: &mut dyn Device, rep: &mut Report) {
    rep.check(
        "identification register",
        dev.read32(0, REG_ID).map_err(e).and_then(|v| {
            if v == EDU_ID {
                Ok(format!("{v:#010x}"))
            } else {
                Err(format!("read {v:#010x}, want {EDU_ID:#010x}"))
            }
        }),
    );
    let liveness = (|| {
        for v in [0x1234_5678u32, 0, 0xffff_ffff, 0xa5a5_5a5a] {
            dev.write32(0, REG_LIVENESS, v).map_err(e)?;
            let back = dev.read32(0, REG_LIVENESS).map_err(e)?;
            if back != !v {
                return Err(format!("wrote {v:#010x}, read {back:#010x}, want {:#010x}", !v));
            }
        }
        Ok("4 values inverted".into())
    })();
    rep.check("liveness register", liveness);
}

fn check_bounds(dev: &mut dyn Device, rep: &mut Report) {
    let r = match (
        dev.read32(0, EDU_BAR0_LEN),
        dev.read32(0, 2),
        dev.write32(0, EDU_BAR0_LEN - 2, 0),
    ) {
        (
            Err(Error::OutOfBounds { .. }),
            Err(Error::Unaligned { .. }),
            Err(Error::Unaligned { .. }),
        ) => Ok("offset 1 MiB and unaligned offsets refused".into()),
        other => Err(format!("unexpected results {other:?}")),
    };
    rep.check("register bounds and alignment on the real BAR", r);
    let r = match dev.read32(3, 0) {
        Err(Error::NoSuchBar { bar: 3, .. }) => Ok(String::new()),
        other => Err(format!("BAR 3 does not exist on edu, got {other:?}")),
    };
    rep.check("absent BAR refused", r);
}

/// Programs one edu DMA and waits (up to 5 s) for it to finish.
fn edu_dma(dev: &mut dyn Device, src: u64, dst: u64, len: usize, cmd: u32) -> Result<(), String> {
    let lo = |a: u64| {
        u32::try_from(a).map_err(|_| format!("address {a:#x} beyond edu's 32-bit registers"))
    };
    dev.write32(0, REG_DMA_SRC, lo(src)?).map_err(e)?;
    dev.write32(0, REG_DMA_DST, lo(dst)?).map_err(e)?;
    dev.write32(0, REG_DMA_COUNT, lo(len as u64)?).map_err(e)?;
    dev.write32(0, REG_DMA_CMD, cmd | DMA_RUN).map_err(e)?;
    let start = Instant::now();
    while dev.read32(0, REG_DMA_CMD).map_err(e)? & DMA_RUN != 0 {
        if start.elapsed() > Duration::from_secs(5) {
            return Err("edu DMA did not complete within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A reset either works or is refused with the reason (edu offers no reset method).
fn check_reset(dev: &mut dyn Device, rep: &mut Report) {
    rep.check(
        "device reset",
        match dev.reset() {
            Ok(()) => Ok("reset done".into()),
            Err(Error::Unsupported { why, .. }) => Ok(format!("refused clearly: {why}")),
            Err(other) => Err(e(other)),
        },
    );
}

/// With nothing raised, a wait must time out (no spurious or stale interrupt).
fn check_quiet(dev: &mut dyn Device, rep: &mut Report) {
    rep.check(
        "no interrupt before one is raised",
        match dev.wait_interrupt(Duration::from_millis(200)) {
            Ok(false) => Ok(String::new()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// Raises edu interrupt `bits`, waits for it through the backend, checks the status and acks it.
fn interrupt_round(dev: &mut dyn Device, bits: u32) -> Result<String, String> {
    dev.write32(0, REG_IRQ_RAISE, bits).map_err(e)?;
    let got = dev.wait_interrupt(Duration::from_secs(3)).map_err(e)?;
    let status = dev.read32(0, REG_IRQ_STATUS).map_err(e)?;
    dev.write32(0, REG_IRQ_ACK, status).map_err(e)?;
    if !got {
        return Err(format!("no interrupt within 3 s (status {status:#x})"));
    }
    if status & bits != bits {
        return Err(format!("interrupt arrived but status is {status:#x}, want {bits:#x}"));
    }
    Ok(format!("status {status:#x}"))
}

/// Reads the kernel log (/dev/kmsg) for up to `wait`, looking for a DMAR fault at `iova`.
fn dmar_fault_logged(iova: u64, wait: Duration) -> Result<String, String> {
    let needle = format!("fault addr 0x{iova:x}");
    let start = Instant::now();
    loop {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(|err| format!("open /dev/kmsg: {err}"))?;
        let mut rec = vec![0u8; 8192];
        loop {
            match f.read(&mut rec) {
                Ok(0) => break,
                Ok(n) => {
                    let line = String::from_utf8_lossy(&rec[..n]);
                    if line.contains("DMAR") && line.contains(&needle) {
                        let msg = line.split_once(';').map_or(&*line, |(_, m)| m).trim();
                        return Ok(msg.to_owned());
                    }
                }
                Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        if start.elapsed() > wait {
            return Err(format!("no \"DMAR … {needle}\" in the kernel log"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn vfio_checks(addr: PciAddress, rep: &mut Report) {
    let Some(mut dev) =
        opened(rep, "vfio open container, group and device", VfioDevice::open(addr), |d| {
            d.info().name.clone()
        })
    else {
        return;
    };
    let mapped = dev.bar_is_mapped(0);
    check_basics(&mut dev, rep, "config space", mapped);
    rep.check(
        "memory decoding enabled in config space at open",
        dev.config_read16(cfg::COMMAND).map_err(e).and_then(|c| {
            if c & cfg::CMD_MEMORY != 0 {
                Ok(format!("command {c:#06x}"))
            } else {
                Err(format!("command {c:#06x} lacks memory enable"))
            }
        }),
    );
    // Clear bus mastering through config space; the first DMA mapping must turn it back on.
    rep.check(
        "bus master cleared through config space",
        (|| {
            let c = dev.config_read16(cfg::COMMAND).map_err(e)?;
            dev.config_write16(cfg::COMMAND, c & !cfg::CMD_BUS_MASTER).map_err(e)?;
            let off = dev.config_read16(cfg::COMMAND).map_err(e)?;
            if off & cfg::CMD_BUS_MASTER == 0 {
                Ok(format!("{c:#06x} -> {off:#06x}"))
            } else {
                Err(format!("read {off:#06x} after clearing"))
            }
        })(),
    );

    // DMA: host buffer A -> edu buffer -> host buffer B, byte for byte.
    let pa = pattern(0x5eed_0001, DMA_LEN);
    let mut bufs = None;
    let ok = rep.check(
        "DMA map and an edu DMA round trip verified byte for byte",
        (|| {
            let a = dev.dma_alloc(DMA_LEN).map_err(e)?;
            let cmd = dev.config_read16(cfg::COMMAND).map_err(e)?;
            if cmd & cfg::CMD_BUS_MASTER == 0 {
                return Err(format!("dma_alloc left bus mastering off (command {cmd:#06x})"));
            }
            let b = dev.dma_alloc(DMA_LEN).map_err(e)?;
            a.write(0, &pa);
            let (ia, ib) = (a.iova(), b.iova());
            bufs = Some((a, b));
            edu_dma(&mut dev, ia, EDU_BUF, DMA_LEN, 0)?;
            edu_dma(&mut dev, EDU_BUF, ib, DMA_LEN, DMA_TO_RAM)?;
            let Some((_, b)) = bufs.as_ref() else { return Err("buffers vanished".into()) };
            let mut got = vec![0u8; b.len()];
            b.read(0, &mut got);
            if let Some(i) = (0..DMA_LEN).find(|&i| got[i] != pa[i]) {
                return Err(format!("byte {i} is {:#04x}, want {:#04x}", got[i], pa[i]));
            }
            if got[DMA_LEN..].iter().any(|&x| x != 0) {
                return Err("bytes past the transfer were written".into());
            }
            Ok(format!(
                "{DMA_LEN} bytes via IOVA {ia:#x} and {ib:#x}; bus master on (command {cmd:#06x})"
            ))
        })(),
    );

    // Interrupts through an eventfd: MSI (the default), then INTx twice (the second proves the
    // unmask path), then a DMA-completion interrupt.
    check_quiet(&mut dev, rep);
    rep.check("MSI interrupt through an eventfd", interrupt_round(&mut dev, 0x1));
    rep.check(
        "INTx interrupt through an eventfd, twice",
        (|| {
            dev.enable_interrupts(IrqMode::Intx).map_err(e)?;
            let first = interrupt_round(&mut dev, 0x2)?;
            let second = interrupt_round(&mut dev, 0x4)?;
            Ok(format!("{first}, then {second}"))
        })(),
    );

    if let (true, Some((a, b))) = (ok, bufs) {
        let (ia, ib) = (a.iova(), b.iova());
        rep.check(
            "DMA-completion interrupt",
            (|| {
                dev.enable_interrupts(IrqMode::Msi).map_err(e)?;
                edu_dma(&mut dev, EDU_BUF, ib, DMA_LEN, DMA_TO_RAM | DMA_IRQ)?;
                let got = dev.wait_interrupt(Duration::from_secs(3)).map_err(e)?;
                let status = dev.read32(0, REG_IRQ_STATUS).map_err(e)?;
                dev.write32(0, REG_IRQ_ACK, status).map_err(e)?;
                match (got, status & IRQ_DMA_DONE) {
                    (true, IRQ_DMA_DONE) => Ok(format!("status {status:#x}")),
                    _ => Err(format!("interrupt {got}, status {status:#x}")),
                }
            })(),
        );

        // Unmap B, then have edu write to B's stale IOVA: the IOMMU must refuse it.
        let freed = rep.check(
            "DMA unmap",
            dev.dma_free(b).map_err(e).and_then(|()| {
                if dev.dma_mappings().iter().any(|&(i, _)| i == ib) {
                    Err("still listed as mapped".into())
                } else {
                    Ok(format!("IOVA {ib:#x}"))
                }
            }),
        );
        if freed {
            rep.check(
                "device write to the unmapped IOVA refused by the IOMMU",
                edu_dma(&mut dev, EDU_BUF, ib, DMA_LEN, DMA_TO_RAM)
                    .and_then(|()| dmar_fault_logged(ib, Duration::from_secs(3))),
            );
        }
        // Put a different pattern in edu's buffer, unmap A, then have edu read A's stale IOVA:
        // the read must fault and A's bytes must not reach the device.
        rep.check(
            "device read from the unmapped IOVA refused by the IOMMU",
            (|| {
                let pc = pattern(0x5eed_0002, DMA_LEN);
                let c = dev.dma_alloc(DMA_LEN).map_err(e)?;
                c.write(0, &pc);
                let ic = c.iova();
                edu_dma(&mut dev, ic, EDU_BUF, DMA_LEN, 0)?;
                dev.dma_free(a).map_err(e)?;
                edu_dma(&mut dev, ia, EDU_BUF, DMA_LEN, 0)?;
                let fault = dmar_fault_logged(ia, Duration::from_secs(3))?;
                edu_dma(&mut dev, EDU_BUF, ic, DMA_LEN, DMA_TO_RAM)?;
                let mut got = vec![0u8; DMA_LEN];
                c.read(0, &mut got);
                dev.dma_free(c).map_err(e)?;
                if got == pa {
                    return Err("the stale buffer's bytes reached the device".into());
                }
                Ok(fault)
            })(),
        );
    } else {
        rep.skip("DMA unmap and stale-IOVA checks", "the DMA round trip failed");
    }

    check_reset(&mut dev, rep);
    check_id_and_liveness(&mut dev, rep);
    // The path for BARs VFIO will not mmap: one pread/pwrite on the device fd per register.
    rep.check(
        "BAR0 through pread/pwrite on the device fd",
        dev.use_read_write_access(0).map_err(e).and_then(|()| {
            if dev.bar_is_mapped(0) {
                Err("still mapped".into())
            } else {
                Ok(String::new())
            }
        }),
    );
    check_id_and_liveness(&mut dev, rep);
    check_bounds(&mut dev, rep);
    drop(dev);
    rep.check(
        "close and reopen (group released)",
        VfioDevice::open(addr)
            .map_err(e)
            .and_then(|mut d| d.read32(0, REG_ID).map_err(e))
            .and_then(|v| if v == EDU_ID { Ok(String::new()) } else { Err(format!("id {v:#x}")) }),
    );
    wrong_driver_check(rep, |a| VfioDevice::open(a).map(|_| ()), "vfio-pci");
    unprivileged_checks(addr, rep);
}

/// The IOMMU group node of a device, `/dev/vfio/N`.
fn group_node(addr: PciAddress) -> Result<PathBuf, String> {
    let link = format!("/sys/bus/pci/devices/{addr}/iommu_group");
    let target = std::fs::read_link(&link).map_err(|err| format!("read {link}: {err}"))?;
    let group = target.file_name().ok_or_else(|| format!("{link} has no group number"))?;
    Ok(Path::new("/dev/vfio").join(group))
}

/// Runs this program again as user nobody (`child-open <addr> [memlock]`) and returns its output.
fn as_nobody(addr: PciAddress, extra: &[&str]) -> Result<(bool, String), String> {
    let out = Command::new("/proc/self/exe")
        .arg("child-open")
        .arg(addr.to_string())
        .args(extra)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .map_err(|err| format!("spawn the unprivileged child: {err}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text.trim().to_owned()))
}

const NOBODY: u32 = 65534;
const CHILD_MEMLOCK: u64 = 64 * 1024;

/// Errors a real kernel gives an unprivileged user: no access to the group node, then (with
/// access but without CAP_IPC_LOCK) a DMA mapping beyond RLIMIT_MEMLOCK.
fn unprivileged_checks(addr: PciAddress, rep: &mut Report) {
    let node = match group_node(addr) {
        Ok(n) => n,
        Err(why) => {
            rep.check("unprivileged open", Err(why));
            return;
        }
    };
    let want = format!("permission denied opening {}", node.display());
    rep.check(
        "permission denied on /dev/vfio/N names the node",
        as_nobody(addr, &[]).and_then(|(ok, text)| {
            if !ok && text.contains(&want) {
                Ok(text)
            } else {
                Err(format!("want a failure with {want:?}, got: {text}"))
            }
        }),
    );
    let owned = std::os::unix::fs::chown(&node, Some(NOBODY), Some(NOBODY));
    rep.check(
        "memlock limit too low for DMA names RLIMIT_MEMLOCK and the need",
        owned.map_err(|err| format!("chown {}: {err}", node.display())).and_then(|()| {
            let (ok, text) = as_nobody(addr, &["memlock"])?;
            let limit = format!("RLIMIT_MEMLOCK is {CHILD_MEMLOCK} bytes");
            let need = format!("at least {} bytes", 4096 + (1 << 20));
            if !ok
                && text.contains("small DMA map ok")
                && text.contains(&limit)
                && text.contains(&need)
            {
                Ok(text.lines().last().unwrap_or_default().to_owned())
            } else {
                Err(format!("want {limit:?} and {need:?}, got: {text}"))
            }
        }),
    );
    let _ = std::os::unix::fs::chown(&node, Some(0), Some(0));
}

/// The unprivileged child: opens the device; with `memlock`, lowers RLIMIT_MEMLOCK, maps one
/// page (must work) and then 1 MiB (must fail). Exits 0 only if everything succeeded.
fn child_open(addr: PciAddress, memlock: bool) -> i32 {
    if memlock {
        use nix::sys::resource::{setrlimit, Resource};
        if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, CHILD_MEMLOCK, CHILD_MEMLOCK) {
            println!("setrlimit: {err}");
            return 3;
        }
    }
    let mut dev = match VfioDevice::open(addr) {
        Ok(d) => d,
        Err(err) => {
            println!("{err}");
            return 1;
        }
    };
    if !memlock {
        println!("opened");
        return 0;
    }
    match dev.dma_alloc(4096) {
        Ok(_) => println!("small DMA map ok"),
        Err(err) => {
            println!("{err}");
            return 1;
        }
    }
    match dev.dma_alloc(1 << 20) {
        Ok(_) => {
            println!("1 MiB DMA map unexpectedly succeeded");
            0
        }
        Err(err) => {
            println!("{err}");
            1
        }
    }
}

/// Two edu devices behind one PCIe-to-PCI bridge share an IOMMU group; with one bound to vfio-pci
/// and the other to uio_pci_generic, opening the first must fail naming the group and the other.
fn not_viable_check(addr: PciAddress, other: PciAddress, rep: &mut Report) {
    let want = format!("{other} (bound to uio_pci_generic)");
    rep.check(
        "group not viable names the group and the other devices in it",
        match VfioDevice::open(addr) {
            Err(err @ Error::GroupNotViable { .. }) if err.to_string().contains(&want) => {
                Ok(err.to_string())
            }
            Err(err) => Err(format!("want GroupNotViable naming {want:?}, got: {err}")),
            Ok(_) => Err("opened a device whose group is not viable".into()),
        },
    );
}

/// Opening the host bridge (00:00.0, never bound to vfio-pci or uio) names its driver and the fix.
fn wrong_driver_check(
    rep: &mut Report,
    open: impl Fn(PciAddress) -> Result<(), Error>,
    wanted: &str,
) {
    let host_bridge = PciAddress { domain: 0, bus: 0, device: 0, function: 0 };
    rep.check(
        "a device on another driver is refused with the rebind commands",
        match open(host_bridge) {
            Err(err @ Error::WrongDriver { .. }) => {
                let msg = err.to_string();
                if msg.contains(&format!(
                    "echo {wanted} > /sys/bus/pci/devices/0000:00:00.0/driver_override"
                )) {
                    Ok(msg)
                } else {
                    Err(format!("message lacks the rebind commands: {msg}"))
                }
            }
            other => Err(format!("{:?}", other.err())),
        },
    );
}

fn uio_checks(addr: PciAddress, rep: &mut Report) {
    let Some(mut dev) =
        opened(rep, "uio open /dev/uioN and sysfs resources", UioDevice::open(addr), |d| {
            d.uio_path().display().to_string()
        })
    else {
        return;
    };
    let mapped = dev.bar_is_mapped(0);
    check_basics(&mut dev, rep, "sysfs", mapped);
    rep.check(
        "DMA refused without an IOMMU",
        match dev.dma_alloc(4096) {
            Err(err @ Error::Unsupported { .. })
                if err.to_string().contains("no IOMMU, so no safe DMA") =>
            {
                Ok(err.to_string())
            }
            other => Err(format!("{:?}", other.map(|b| b.iova()))),
        },
    );
    rep.check(
        "chip cards refused over uio, module cards accepted",
        match (
            ensure_uio_can_drive(CHIP_CARD_40M),
            ensure_uio_can_drive(CHIP_CARD_240M),
            ensure_uio_can_drive(MODULE_CARD),
        ) {
            (Err(_), Err(_), Ok(())) => Ok(String::new()),
            other => Err(format!("{other:?}")),
        },
    );
    check_quiet(&mut dev, rep);
    rep.check("interrupt through /dev/uioN", interrupt_round(&mut dev, 0x1));
    rep.check(
        "uio_pci_generic masked INTx (command bit 10) and the next wait re-enables it",
        (|| {
            let c = dev.config_read16(cfg::COMMAND).map_err(e)?;
            if c & cfg::CMD_INTX_DISABLE == 0 {
                return Err(format!("command {c:#06x}: expected INTx disabled by the uio handler"));
            }
            let second = interrupt_round(&mut dev, 0x2)?;
            Ok(format!("command was {c:#06x}; second interrupt {second}"))
        })(),
    );
    check_reset(&mut dev, rep);
    check_id_and_liveness(&mut dev, rep);
    wrong_driver_check(rep, |a| UioDevice::open(a).map(|_| ()), "uio_pci_generic");
}

fn parse_addr(s: &str) -> PciAddress {
    s.parse().unwrap_or_else(|err| {
        eprintln!("vm_guest: {err}");
        std::process::exit(2);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut rep = Report { passed: 0, failed: 0, skipped: 0 };
    let mode = args.first().copied().unwrap_or_default();
    match args.as_slice() {
        ["vfio", a] => vfio_checks(parse_addr(a), &mut rep),
        ["uio", a] => uio_checks(parse_addr(a), &mut rep),
        ["vfio-not-viable", a, b] => not_viable_check(parse_addr(a), parse_addr(b), &mut rep),
        ["child-open", a] => std::process::exit(child_open(parse_addr(a), false)),
        ["child-open", a, "memlock"] => std::process::exit(child_open(parse_addr(a), true)),
        _ => {
            eprintln!("usage: vm_guest vfio|uio <pci-address> | vfio-not-viable <address> <group-peer-address>");
            std::process::exit(2);
        }
    }
    println!(
        "vm_guest {mode}: {} passed, {} failed, {} skipped",
        rep.passed, rep.failed, rep.skipped
    );
    std::process::exit(if rep.failed == 0 { 0 } else { 1 });
}
