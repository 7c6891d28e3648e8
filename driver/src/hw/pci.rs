//! PCI facts from sysfs: which Quantis cards are present, which kernel driver holds each, its IOMMU
//! group, and what a user must do to hand it to this driver.
//!
//! Used by `quantis-driver list` and by the VFIO and UIO backends for their error messages (a
//! device bound to the wrong driver gets the exact commands to rebind it). The sysfs root is a
//! parameter so tests run against a fake tree in a tempdir.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Error, PciAddress, PciId, Result};

/// PCI class code of a PCI-to-PCI bridge (PCI Code and ID Assignment spec, class 06 subclass 04).
const CLASS_PCI_BRIDGE: u32 = 0x0604;

/// PCI configuration header offsets and command-register bits (PCI Local Bus Spec 3.0, §6.2.2).
pub mod cfg {
    pub const VENDOR_ID: u64 = 0x00;
    pub const DEVICE_ID: u64 = 0x02;
    pub const COMMAND: u64 = 0x04;
    pub const CMD_MEMORY: u16 = 1 << 1;
    pub const CMD_BUS_MASTER: u16 = 1 << 2;
    pub const CMD_INTX_DISABLE: u16 = 1 << 10;
    pub const STATUS: u64 = 0x06;
    /// Interrupt Status: the device asserts INTx, whatever the Interrupt Disable bit says.
    pub const STATUS_INTX: u16 = 1 << 3;
}

pub use crate::regs::ids::{quantis_model, Family as CardFamily, CHIP_CARD_240M, CHIP_CARD_40M, MODULE_CARD};

/// A view of a sysfs tree (normally `/sys`).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/sys")
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// `/sys/bus/pci/devices/<addr>`.
    pub fn device_dir(&self, addr: PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(addr.to_string())
    }

    /// The device directory, or a "no such device" error naming it.
    pub fn existing_device_dir(&self, addr: PciAddress) -> Result<PathBuf> {
        let dir = self.device_dir(addr);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::NoSuchDevice { device: addr.to_string(), path: dir.display().to_string() })
        }
    }

    /// The device directory if the device exists and is bound to `wanted`; otherwise an error
    /// naming the driver it is bound to and the commands that rebind it.
    pub fn require_driver(&self, addr: PciAddress, wanted: &'static str) -> Result<PathBuf> {
        let dir = self.existing_device_dir(addr)?;
        let driver = self.driver(addr);
        if driver.as_deref() == Some(wanted) {
            return Ok(dir);
        }
        Err(Error::WrongDriver { device: addr, bound: driver, wanted })
    }

    /// Vendor and device id from the sysfs `vendor`/`device` files.
    pub fn id(&self, addr: PciAddress) -> Result<PciId> {
        let dir = self.device_dir(addr);
        let vendor = read_hex(&dir.join("vendor"), addr)?;
        let device = read_hex(&dir.join("device"), addr)?;
        let narrow = |v: u32, what: &str| {
            u16::try_from(v).map_err(|_| Error::Io {
                op: format!("parse {what} id {v:#x} (more than 16 bits)"),
                device: addr.to_string(),
                source: io::Error::from(io::ErrorKind::InvalidData),
            })
        };
        Ok(PciId { vendor: narrow(vendor, "vendor")?, device: narrow(device, "device")? })
    }

    /// The name of the kernel driver bound to the device (the `driver` link's target), if any.
    pub fn driver(&self, addr: PciAddress) -> Option<String> {
        link_name(&self.device_dir(addr).join("driver"))
    }

    /// The device's IOMMU group number, if the IOMMU is on.
    pub fn iommu_group(&self, addr: PciAddress) -> Option<u32> {
        link_name(&self.device_dir(addr).join("iommu_group"))?.parse().ok()
    }

    /// The other devices in an IOMMU group and the driver each is bound to.
    pub fn group_peers(&self, group: u32, except: PciAddress) -> Vec<GroupPeer> {
        let dir = self.root.join("kernel/iommu_groups").join(group.to_string()).join("devices");
        let mut peers: Vec<GroupPeer> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<PciAddress>().ok())
            .filter(|&a| a != except)
            .map(|a| GroupPeer {
                address: a,
                driver: self.driver(a),
                bridge: self.class(a).is_some_and(|c| c >> 8 == CLASS_PCI_BRIDGE),
            })
            .collect();
        peers.sort_by_key(|p| p.address);
        peers
    }

    /// The 24-bit class code (`class` file), if readable.
    fn class(&self, addr: PciAddress) -> Option<u32> {
        read_hex(&self.device_dir(addr).join("class"), addr).ok()
    }
}

/// Another device in the same IOMMU group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupPeer {
    pub address: PciAddress,
    pub driver: Option<String>,
    /// Bridges do not stop a group being viable (the kernel allows them under any driver).
    pub bridge: bool,
}

impl GroupPeer {
    /// Whether this peer keeps the group from being usable by vfio (the kernel's rule: every
    /// non-bridge device must be bound to a vfio driver, pci-stub, or nothing).
    pub fn blocks_vfio(&self) -> bool {
        !self.bridge && !matches!(self.driver.as_deref(), None | Some("vfio-pci" | "pci-stub"))
    }
}

/// "0000:00:1f.2 (bound to ahci), 0000:00:1f.3 (no driver)".
pub fn describe_peers(peers: &[GroupPeer]) -> String {
    if peers.is_empty() {
        return "none".into();
    }
    peers
        .iter()
        .map(|p| match &p.driver {
            Some(d) => format!("{} (bound to {d})", p.address),
            None => format!("{} (no driver)", p.address),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shell commands (as root) that hand `addr` to `target` (`vfio-pci`, `uio_pci_generic`).
pub fn bind_commands(addr: PciAddress, current: Option<&str>, target: &str) -> Vec<String> {
    let dev = format!("/sys/bus/pci/devices/{addr}");
    let mut cmds =
        vec![format!("modprobe {target}"), format!("echo {target} > {dev}/driver_override")];
    if current.is_some() {
        cmds.push(format!("echo {addr} > {dev}/driver/unbind"));
    }
    cmds.push(format!("echo {addr} > /sys/bus/pci/drivers_probe"));
    cmds
}

/// One Quantis card found on the PCI bus.
#[derive(Clone, Debug, Serialize)]
pub struct PciCard {
    pub address: PciAddress,
    pub id: PciId,
    pub family: CardFamily,
    pub model: &'static str,
    /// Kernel driver bound to it (`vfio-pci`, `uio_pci_generic`, …), None if unbound.
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub group_peers: Vec<GroupPeer>,
    /// The `--device` uri to use, when the card is ready for this driver.
    pub ready_uri: Option<String>,
    /// What to do to use it: "ready: …" or the steps to get there.
    pub hint: String,
}

/// Scans `<root>/bus/pci/devices` for Quantis cards, sorted by address.
pub fn scan(sysfs: &Sysfs) -> Result<Vec<PciCard>> {
    let dir = sysfs.root.join("bus/pci/devices");
    let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
        op: format!("list {}", dir.display()),
        device: "the PCI bus".into(),
        source,
    })?;
    let mut cards: Vec<PciCard> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<PciAddress>().ok())
        .filter_map(|addr| {
            // A device whose ids cannot be read is not one we can claim; skip it.
            let id = sysfs.id(addr).ok()?;
            let (family, model) = quantis_model(id)?;
            Some(describe_card(sysfs, addr, id, family, model))
        })
        .collect();
    cards.sort_by_key(|c| c.address);
    Ok(cards)
}

fn describe_card(
    sysfs: &Sysfs,
    addr: PciAddress,
    id: PciId,
    family: CardFamily,
    model: &'static str,
) -> PciCard {
    let driver = sysfs.driver(addr);
    let iommu_group = sysfs.iommu_group(addr);
    let group_peers = iommu_group.map(|g| sysfs.group_peers(g, addr)).unwrap_or_default();
    let (ready_uri, hint) = advise(addr, family, driver.as_deref(), iommu_group, &group_peers);
    PciCard { address: addr, id, family, model, driver, iommu_group, group_peers, ready_uri, hint }
}

/// Decides what a user must do before this driver can use the card.
fn advise(
    addr: PciAddress,
    family: CardFamily,
    driver: Option<&str>,
    group: Option<u32>,
    peers: &[GroupPeer],
) -> (Option<String>, String) {
    let to = |target: &str| bind_commands(addr, driver, target).join(" && ");
    match (driver, group, family) {
        (Some("vfio-pci"), Some(g), _) => {
            let blocking: Vec<GroupPeer> = peers.iter().filter(|p| p.blocks_vfio()).cloned().collect();
            if blocking.is_empty() {
                let uri = format!("vfio:{addr}");
                let hint = format!("ready: quantis-driver --device {uri}");
                (Some(uri), hint)
            } else {
                let hint = format!(
                    "IOMMU group {g} is not viable: also bind {} to vfio-pci, or move the card to a slot with its own group",
                    describe_peers(&blocking)
                );
                (None, hint)
            }
        }
        (Some("uio_pci_generic"), _, CardFamily::Module) => {
            let uri = format!("uio:{addr}");
            let hint = format!("ready: quantis-driver --device {uri} (vfio-pci is preferred where an IOMMU exists)");
            (Some(uri), hint)
        }
        (_, Some(_), _) => (None, format!("bind it to vfio-pci: {}", to("vfio-pci"))),
        (_, None, CardFamily::Module) => (
            None,
            format!(
                "no IOMMU group (IOMMU off): bind it to uio_pci_generic: {}; or boot with intel_iommu=on / amd_iommu=on and use vfio-pci",
                to("uio_pci_generic")
            ),
        ),
        (_, None, CardFamily::Chip) => (
            None,
            "chip cards stream by DMA and need vfio-pci behind an IOMMU, which is off: boot with intel_iommu=on \
             (or amd_iommu=on), then bind the card to vfio-pci"
                .into(),
        ),
    }
}

/// The text `quantis-driver list` prints.
pub fn format_list(cards: &[PciCard]) -> String {
    if cards.is_empty() {
        return format!(
            "no Quantis card found (looked for {MODULE_CARD}, {CHIP_CARD_40M} and {CHIP_CARD_240M} in /sys/bus/pci/devices)\n"
        );
    }
    let mut out = String::new();
    for c in cards {
        let family = match c.family {
            CardFamily::Module => "module card",
            CardFamily::Chip => "chip card",
        };
        let group = c.iommu_group.map_or_else(|| "none".to_owned(), |g| g.to_string());
        out.push_str(&format!("{}  {} ({family}, {})\n", c.address, c.model, c.id));
        out.push_str(&format!(
            "    driver: {}  iommu group: {group}",
            c.driver.as_deref().unwrap_or("none")
        ));
        if !c.group_peers.is_empty() {
            out.push_str(&format!("  (shared with {})", describe_peers(&c.group_peers)));
        }
        out.push('\n');
        out.push_str(&format!("    {}\n", c.hint));
    }
    out
}

/// Reads a sysfs hex attribute such as `0x179a`.
fn read_hex(path: &Path, addr: PciAddress) -> Result<u32> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        op: format!("read {}", path.display()),
        device: addr.to_string(),
        source,
    })?;
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).map_err(|_| Error::Io {
        op: format!("parse {} ({t:?} is not hexadecimal)", path.display()),
        device: addr.to_string(),
        source: io::Error::from(io::ErrorKind::InvalidData),
    })
}

/// The last component of a symlink's target (`driver` -> `…/drivers/vfio-pci` gives `vfio-pci`).
fn link_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    Some(target.file_name()?.to_str()?.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds a fake sysfs: devices with vendor/device/class files, driver and iommu_group links.
    pub(crate) struct FakeSysfs {
        pub dir: tempfile::TempDir,
    }

    impl FakeSysfs {
        pub(crate) fn new() -> FakeSysfs {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("bus/pci/devices")).unwrap();
            FakeSysfs { dir }
        }

        pub(crate) fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.dir.path())
        }

        pub(crate) fn add(
            &self,
            addr: &str,
            id: PciId,
            class: u32,
            driver: Option<&str>,
            group: Option<u32>,
        ) {
            let root = self.dir.path();
            let dev = root.join("bus/pci/devices").join(addr);
            fs::create_dir_all(&dev).unwrap();
            fs::write(dev.join("vendor"), format!("{:#06x}\n", id.vendor)).unwrap();
            fs::write(dev.join("device"), format!("{:#06x}\n", id.device)).unwrap();
            fs::write(dev.join("class"), format!("{class:#08x}\n")).unwrap();
            if let Some(d) = driver {
                // Dangling like-the-real-thing target: only the last component matters.
                symlink(format!("../../../../bus/pci/drivers/{d}"), dev.join("driver")).unwrap();
            }
            if let Some(g) = group {
                symlink(format!("../../../../kernel/iommu_groups/{g}"), dev.join("iommu_group"))
                    .unwrap();
                let gdir = root.join(format!("kernel/iommu_groups/{g}/devices"));
                fs::create_dir_all(&gdir).unwrap();
                symlink(&dev, gdir.join(addr)).unwrap();
            }
        }
    }

    const OTHER: PciId = PciId { vendor: 0x8086, device: 0x1234 };
    const NET: u32 = 0x020000;

    fn find<'a>(cards: &'a [PciCard], addr: &str) -> &'a PciCard {
        cards.iter().find(|c| c.address.to_string() == addr).unwrap()
    }

    #[test]
    fn finds_only_quantis_cards_sorted() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("vfio-pci"), Some(7));
        f.add("0000:00:1f.0", OTHER, NET, Some("e1000e"), Some(3));
        f.add("0000:03:00.0", MODULE_CARD, 0x108000, None, None);
        f.add("0000:04:00.0", CHIP_CARD_40M, 0x108000, None, Some(5));
        let cards = scan(&f.sysfs()).unwrap();
        let addrs: Vec<String> = cards.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(addrs, ["0000:03:00.0", "0000:04:00.0", "0000:05:00.0"]);
        assert_eq!(find(&cards, "0000:05:00.0").model, "Quantis PCIe-240M");
        assert_eq!(find(&cards, "0000:04:00.0").family, CardFamily::Chip);
        assert_eq!(find(&cards, "0000:03:00.0").family, CardFamily::Module);
    }

    #[test]
    fn vfio_bound_card_alone_in_its_group_is_ready() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("vfio-pci"), Some(7));
        let cards = scan(&f.sysfs()).unwrap();
        let c = &cards[0];
        assert_eq!(c.driver.as_deref(), Some("vfio-pci"));
        assert_eq!(c.iommu_group, Some(7));
        assert_eq!(c.ready_uri.as_deref(), Some("vfio:0000:05:00.0"));
        assert_eq!(c.hint, "ready: quantis-driver --device vfio:0000:05:00.0");
    }

    #[test]
    fn group_shared_with_a_bound_device_is_not_viable_but_a_bridge_is_fine() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", MODULE_CARD, 0x108000, Some("vfio-pci"), Some(9));
        f.add("0000:05:00.1", OTHER, NET, Some("e1000e"), Some(9));
        f.add("0000:00:1c.0", OTHER, 0x060400, Some("pcieport"), Some(9));
        let cards = scan(&f.sysfs()).unwrap();
        let c = &cards[0];
        assert_eq!(c.ready_uri, None);
        assert!(c.hint.contains("group 9 is not viable"), "{}", c.hint);
        assert!(c.hint.contains("0000:05:00.1 (bound to e1000e)"), "{}", c.hint);
        assert!(!c.hint.contains("0000:00:1c.0"), "bridges do not block: {}", c.hint);
        assert_eq!(c.group_peers.len(), 2);

        // Unbinding the peer makes the group viable.
        fs::remove_file(f.dir.path().join("bus/pci/devices/0000:05:00.1/driver")).unwrap();
        let cards = scan(&f.sysfs()).unwrap();
        assert_eq!(cards[0].ready_uri.as_deref(), Some("vfio:0000:05:00.0"));
    }

    #[test]
    fn unbound_card_with_iommu_gets_vfio_bind_commands() {
        let f = FakeSysfs::new();
        f.add("0000:04:00.0", CHIP_CARD_40M, 0x108000, Some("qrandom"), Some(5));
        let c = &scan(&f.sysfs()).unwrap()[0];
        assert_eq!(c.ready_uri, None);
        assert!(
            c.hint.contains("echo vfio-pci > /sys/bus/pci/devices/0000:04:00.0/driver_override"),
            "{}",
            c.hint
        );
        assert!(
            c.hint.contains("echo 0000:04:00.0 > /sys/bus/pci/devices/0000:04:00.0/driver/unbind"),
            "{}",
            c.hint
        );
        assert!(c.hint.contains("echo 0000:04:00.0 > /sys/bus/pci/drivers_probe"), "{}", c.hint);
    }

    #[test]
    fn without_iommu_module_cards_go_to_uio_and_chip_cards_are_told_why_not() {
        let f = FakeSysfs::new();
        f.add("0000:03:00.0", MODULE_CARD, 0x108000, None, None);
        f.add("0000:04:00.0", CHIP_CARD_40M, 0x108000, Some("uio_pci_generic"), None);
        let cards = scan(&f.sysfs()).unwrap();
        let module = find(&cards, "0000:03:00.0");
        assert!(module.hint.contains("echo uio_pci_generic > "), "{}", module.hint);
        assert!(
            !module.hint.contains("unbind"),
            "an unbound card needs no unbind: {}",
            module.hint
        );
        let chip = find(&cards, "0000:04:00.0");
        assert_eq!(chip.ready_uri, None, "a chip card on uio is not usable");
        assert!(chip.hint.contains("need vfio-pci behind an IOMMU"), "{}", chip.hint);
    }

    #[test]
    fn uio_bound_module_card_is_ready() {
        let f = FakeSysfs::new();
        f.add("0000:03:00.0", MODULE_CARD, 0x108000, Some("uio_pci_generic"), None);
        let c = &scan(&f.sysfs()).unwrap()[0];
        assert_eq!(c.ready_uri.as_deref(), Some("uio:0000:03:00.0"));
    }

    #[test]
    fn garbage_ids_and_names_are_skipped_not_fatal() {
        let f = FakeSysfs::new();
        f.add("0000:03:00.0", MODULE_CARD, 0x108000, None, None);
        let junk = f.dir.path().join("bus/pci/devices/0000:06:00.0");
        fs::create_dir_all(&junk).unwrap();
        fs::write(junk.join("vendor"), "zzz\n").unwrap();
        fs::create_dir_all(f.dir.path().join("bus/pci/devices/not-an-address")).unwrap();
        let cards = scan(&f.sysfs()).unwrap();
        assert_eq!(cards.len(), 1);
    }

    #[test]
    fn missing_sysfs_is_a_clear_error() {
        let err = scan(&Sysfs::new("/nonexistent-sysfs-root")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-sysfs-root/bus/pci/devices"), "{err}");
    }

    #[test]
    fn list_text_shows_each_card_and_the_empty_case() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("vfio-pci"), Some(7));
        let text = format_list(&scan(&f.sysfs()).unwrap());
        assert!(
            text.starts_with("0000:05:00.0  Quantis PCIe-240M (chip card, 1e89:0003)\n"),
            "{text}"
        );
        assert!(text.contains("driver: vfio-pci  iommu group: 7"), "{text}");
        assert!(text.contains("ready: quantis-driver --device vfio:0000:05:00.0"), "{text}");
        let empty = format_list(&[]);
        assert!(empty.starts_with("no Quantis card found"), "{empty}");
        assert!(empty.contains("179a:0001"), "{empty}");
    }

    #[test]
    fn serializes_addresses_as_strings() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("vfio-pci"), Some(7));
        let json = serde_json::to_value(scan(&f.sysfs()).unwrap()).unwrap();
        assert_eq!(json[0]["address"], "0000:05:00.0");
        assert_eq!(json[0]["family"], "chip");
        assert_eq!(json[0]["iommu_group"], 7);
    }
}
