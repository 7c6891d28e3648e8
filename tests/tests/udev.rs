//! The udev rules (udev/70-quantis-qrng.rules) and their helper (udev/quantis-vfio) exercised by
//! the real `udevadm test` and the real helper against fake devices.
//!
//! udev 252 has no `udevadm verify` and no root option, and the host has no Quantis card. Each
//! case therefore runs in a private mount namespace in which a fake sysfs tree is bind-mounted over
//! /sys, every rules directory is replaced by one holding only our rules, the helper is installed
//! at its real path, /etc/group gains a `qrng` group and /dev is a tmpfs holding the device nodes.
//! `SYSTEMD_DEVICE_VERIFY_SYSFS=0` lets sd-device accept a syspath that is not on a real sysfs.
//! udevadm then parses the rules, runs PROGRAM, applies GROUP/MODE to the node and prints the
//! properties and RUN list; the test asserts on those and on the node's owner and mode.

use qrng_e2e::packaging::{
    group_file_with_qrng, missing_prerequisites, output_text, run_in_mount_namespace, sh_quote,
    skip, udev_rule_problems, workspace_root, FakeSysfs, UdevTest,
};
use std::path::PathBuf;

const RULES_NAME: &str = "70-quantis-qrng.rules";
const RULES_IN_NS: &str = "/run/udev/rules.d/70-quantis-qrng.rules";
const HELPER: &str = "/usr/libexec/quantis-qrng/quantis-vfio";

/// The three Quantis PCI ids (docs quantis-hardware.md).
const QUANTIS_PCI: [(u16, u16); 3] = [(0x179a, 0x0001), (0x1e89, 0x0002), (0x1e89, 0x0003)];

struct Env {
    _dir: tempfile::TempDir,
    sys: FakeSysfs,
    group_file: PathBuf,
    qrng_gid: u32,
    rules: PathBuf,
}

/// A fresh fake sysfs and group file, or `None` (after printing why) if the test cannot run here.
fn env(test: &str, tools: &[&str]) -> Option<Env> {
    if let Some(reason) = missing_prerequisites(tools, true) {
        skip(test, &reason);
        return None;
    }
    let dir = tempfile::tempdir().expect("create temp dir");
    let sys = FakeSysfs::new(&dir.path().join("sys")).expect("create fake sysfs");
    let group_file = dir.path().join("group");
    let qrng_gid = group_file_with_qrng(&group_file).expect("write group file");
    Some(Env {
        _dir: dir,
        sys,
        group_file,
        qrng_gid,
        rules: workspace_root().join("udev").join(RULES_NAME),
    })
}

/// Sets up the namespace described in the module doc, creates `nodes` (path under /dev, major,
/// minor) with mode 0600, runs `body`, then prints `RESULT node PATH GID MODE` for every node.
fn run_ns(env: &Env, nodes: &[(&str, u32, u32)], body: &str) -> (String, String) {
    let mut script = format!(
        r#"
mount --bind {sys} /sys
mount -t tmpfs tmpfs /run
for d in /etc/udev/rules.d /usr/local/lib/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d; do
    if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
done
mkdir -p /run/udev/rules.d
cp {rules} {RULES_IN_NS}
mount -t tmpfs tmpfs /usr/libexec
mkdir /usr/libexec/quantis-qrng
cp {helper} {HELPER}
chmod 755 {HELPER}
mount --bind {group} /etc/group
mount -t tmpfs -o mode=755 tmpfs /dev
mknod -m 666 /dev/null c 1 3
"#,
        sys = sh_quote(&env.sys.root().display().to_string()),
        rules = sh_quote(&env.rules.display().to_string()),
        helper = sh_quote(&workspace_root().join("udev/quantis-vfio").display().to_string()),
        group = sh_quote(&env.group_file.display().to_string()),
    );
    for (node, major, minor) in nodes {
        script.push_str(&format!(
            "mkdir -p \"$(dirname /dev/{node})\"\nmknod -m 600 /dev/{node} c {major} {minor}\n"
        ));
    }
    script.push_str(body);
    script.push('\n');
    for (node, _, _) in nodes {
        script.push_str(&format!(
            "echo \"RESULT node /dev/{node} $(stat -c '%g %a' /dev/{node})\"\n"
        ));
    }
    let out = run_in_mount_namespace(&script, &[("SYSTEMD_DEVICE_VERIFY_SYSFS", "0")])
        .expect("run unshare");
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "namespace script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `udevadm test --action=ACTION DEVPATH` in the namespace; fails the test if udev reports a
/// problem in our rules file.
fn udevadm_test(env: &Env, action: &str, devpath: &str, nodes: &[(&str, u32, u32)]) -> UdevTest {
    let body = format!("udevadm test --action={action} {}", sh_quote(devpath));
    let (stdout, stderr) = run_ns(env, nodes, &body);
    let t = UdevTest::parse(&stdout, &stderr);
    assert!(
        t.log.contains(&format!("Reading rules file: {RULES_IN_NS}")),
        "udevadm did not read our rules:\n{}",
        t.log
    );
    let problems = udev_rule_problems(&t.log, RULES_IN_NS);
    assert!(problems.is_empty(), "udev reports problems in {RULES_NAME}: {problems:#?}");
    assert_eq!(
        t.property("DEVPATH"),
        Some(devpath),
        "udevadm did not process the device:\n{stderr}"
    );
    t
}

#[test]
fn udev_quantis_pci_cards_are_handed_to_vfio_and_tagged_for_systemd() {
    let Some(env) = env(
        "udev_quantis_pci_cards_are_handed_to_vfio_and_tagged_for_systemd",
        &["udevadm", "unshare"],
    ) else {
        return;
    };
    for (i, (vendor, device)) in QUANTIS_PCI.iter().enumerate() {
        let addr = format!("0000:0{}:00.0", i + 3);
        let devpath = env.sys.add_pci(&addr, *vendor, *device).unwrap();
        let t = udevadm_test(&env, "add", &devpath, &[]);
        assert_eq!(
            t.run,
            vec![format!("{HELPER} bind {addr}")],
            "{vendor:04x}:{device:04x} must be bound to vfio-pci by the helper"
        );
        assert!(
            t.has_tag("systemd"),
            "{vendor:04x}:{device:04x} not tagged for systemd: {:?}",
            t.properties
        );
        assert_eq!(
            t.property("SYSTEMD_ALIAS"),
            Some(format!("/sys/subsystem/pci/devices/{addr}").as_str())
        );
        assert_eq!(t.property("ID_QUANTIS"), Some("1"));
        // The driver starts from the VFIO group node, not from the PCI device (see the rules).
        assert_eq!(t.property("SYSTEMD_WANTS"), None);
    }
}

#[test]
fn udev_quantis_pci_change_event_keeps_the_tag_and_does_not_rebind() {
    let Some(env) = env(
        "udev_quantis_pci_change_event_keeps_the_tag_and_does_not_rebind",
        &["udevadm", "unshare"],
    ) else {
        return;
    };
    let devpath = env.sys.add_pci("0000:03:00.0", 0x1e89, 0x0003).unwrap();
    for action in ["change", "bind"] {
        let t = udevadm_test(&env, action, &devpath, &[]);
        assert!(t.run.is_empty(), "{action} must not rebind: {:?}", t.run);
        assert!(t.has_tag("systemd"), "{action} drops the systemd tag: {:?}", t.properties);
        assert_eq!(t.property("SYSTEMD_ALIAS"), Some("/sys/subsystem/pci/devices/0000:03:00.0"));
    }
}

#[test]
fn udev_other_pci_devices_are_left_alone() {
    let Some(env) = env("udev_other_pci_devices_are_left_alone", &["udevadm", "unshare"]) else {
        return;
    };
    // An Intel NIC, and each Quantis vendor with a device id that is not a Quantis card.
    for (i, (vendor, device)) in
        [(0x8086u16, 0x10d3u16), (0x179a, 0x0002), (0x1e89, 0x0001)].iter().enumerate()
    {
        let addr = format!("0000:1{i}:00.0");
        let devpath = env.sys.add_pci(&addr, *vendor, *device).unwrap();
        let t = udevadm_test(&env, "add", &devpath, &[]);
        assert!(t.run.is_empty(), "{vendor:04x}:{device:04x} got {:?}", t.run);
        assert!(!t.has_tag("systemd"), "{vendor:04x}:{device:04x} tagged: {:?}", t.properties);
        assert_eq!(t.property("SYSTEMD_ALIAS"), None);
        assert_eq!(t.property("ID_QUANTIS"), None);
    }
}

#[test]
fn udev_vfio_group_of_a_quantis_card_goes_to_qrng_and_starts_its_driver() {
    let Some(env) = env(
        "udev_vfio_group_of_a_quantis_card_goes_to_qrng_and_starts_its_driver",
        &["udevadm", "unshare"],
    ) else {
        return;
    };
    env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    let devpath = env.sys.add_vfio_group(7, &["0000:03:00.0"], 240, 0).unwrap();
    let t = udevadm_test(&env, "add", &devpath, &[("vfio/7", 240, 0)]);
    assert_eq!(t.property("SYSTEMD_WANTS"), Some("quantis-driver@0000:03:00.0.service"));
    assert!(t.has_tag("systemd"));
    assert_eq!(t.result("node /dev/vfio/7"), Some(format!("{} 660", env.qrng_gid).as_str()));

    // Two cards behind one bridge without ACS share a group: one driver each.
    env.sys.add_pci("0000:05:00.0", 0x1e89, 0x0002).unwrap();
    env.sys.add_pci("0000:05:00.1", 0x1e89, 0x0003).unwrap();
    let devpath = env.sys.add_vfio_group(9, &["0000:05:00.0", "0000:05:00.1"], 240, 1).unwrap();
    let t = udevadm_test(&env, "add", &devpath, &[("vfio/9", 240, 1)]);
    assert_eq!(
        t.property("SYSTEMD_WANTS"),
        Some("quantis-driver@0000:05:00.0.service quantis-driver@0000:05:00.1.service")
    );
    assert_eq!(t.result("node /dev/vfio/9"), Some(format!("{} 660", env.qrng_gid).as_str()));
}

#[test]
fn udev_vfio_group_without_a_quantis_card_is_untouched() {
    let Some(env) =
        env("udev_vfio_group_without_a_quantis_card_is_untouched", &["udevadm", "unshare"])
    else {
        return;
    };
    env.sys.add_pci("0000:08:00.0", 0x8086, 0x10d3).unwrap();
    let devpath = env.sys.add_vfio_group(8, &["0000:08:00.0"], 240, 2).unwrap();
    let t = udevadm_test(&env, "add", &devpath, &[("vfio/8", 240, 2)]);
    assert_eq!(t.property("SYSTEMD_WANTS"), None);
    assert!(!t.has_tag("systemd"));
    assert_eq!(
        t.result("node /dev/vfio/8"),
        Some("0 600"),
        "a foreign VFIO group must stay root-only"
    );
}

#[test]
fn udev_quantis_usb_gets_group_qrng_and_other_usb_devices_do_not() {
    let Some(env) = env(
        "udev_quantis_usb_gets_group_qrng_and_other_usb_devices_do_not",
        &["udevadm", "unshare"],
    ) else {
        return;
    };
    let quantis = env.sys.add_usb("1-1", 0x0aba, 0x0102, 1, 5).unwrap();
    let t = udevadm_test(&env, "add", &quantis, &[("bus/usb/001/005", 189, 4)]);
    assert_eq!(
        t.result("node /dev/bus/usb/001/005"),
        Some(format!("{} 660", env.qrng_gid).as_str())
    );

    let other = env.sys.add_usb("1-2", 0x0aba, 0x0103, 1, 6).unwrap();
    let t = udevadm_test(&env, "add", &other, &[("bus/usb/001/006", 189, 5)]);
    assert_eq!(t.result("node /dev/bus/usb/001/006"), Some("0 600"));
}

#[test]
fn udev_problems_in_rules_are_detected_although_udevadm_exits_zero() {
    let Some(mut env) = env(
        "udev_problems_in_rules_are_detected_although_udevadm_exits_zero",
        &["udevadm", "unshare"],
    ) else {
        return;
    };
    // Our rules plus one misspelt key: the check used above must see it.
    let bad = env.sys.root().parent().unwrap().join(RULES_NAME);
    let mut text = std::fs::read_to_string(&env.rules).unwrap();
    text.push_str("SUBSYSTEM==\"pci\", GRUOP=\"qrng\"\n");
    std::fs::write(&bad, text).unwrap();
    env.rules = bad;
    let devpath = env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    let (_, stderr) =
        run_ns(&env, &[], &format!("udevadm test --action=add {}", sh_quote(&devpath)));
    let problems = udev_rule_problems(&stderr, RULES_IN_NS);
    assert_eq!(problems.len(), 1, "expected exactly the misspelt key, got {problems:#?}\n{stderr}");
    assert!(problems[0].contains("GRUOP"), "{problems:?}");
}

// ---- the helper, run directly against the fake sysfs ----

/// Runs `quantis-vfio ARGS` in the namespace; returns (exit code, stdout, stderr).
fn helper(env: &Env, args: &str, nodes: &[(&str, u32, u32)]) -> (i32, String, String) {
    let body = format!(
        "set +e\n{HELPER} {args} >/run/out 2>/run/err\nrc=$?\nset -e\necho \"RESULT rc $rc\"\n\
         sed 's/^/RESULT out /' /run/out\nsed 's/^/RESULT err /' /run/err"
    );
    let (stdout, stderr) = run_ns(env, nodes, &body);
    let t = UdevTest::parse(&stdout, &stderr);
    let rc = t.result("rc").and_then(|r| r.parse().ok()).expect("helper exit code");
    let lines = |key: &str| -> String {
        t.results.iter().filter_map(|r| r.strip_prefix(key)).map(|l| format!("{l}\n")).collect()
    };
    (rc, lines("out "), lines("err "))
}

fn assert_untouched(sys: &FakeSysfs, addr: &str) {
    assert_eq!(
        sys.read(&format!("devices/pci0000:00/{addr}/driver_override")).unwrap(),
        "(null)\n"
    );
    assert_eq!(sys.read("bus/pci/drivers_probe").unwrap(), "");
}

#[test]
fn udev_helper_bind_unbinds_another_driver_then_probes_vfio() {
    let Some(env) = env("udev_helper_bind_unbinds_another_driver_then_probes_vfio", &["unshare"])
    else {
        return;
    };
    env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    env.sys.bind_pci("0000:03:00.0", "quantis_pci").unwrap();
    let (rc, _, err) = helper(&env, "bind 0000:03:00.0", &[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        env.sys.read("devices/pci0000:00/0000:03:00.0/driver_override").unwrap(),
        "vfio-pci"
    );
    assert_eq!(env.sys.read("bus/pci/drivers/quantis_pci/unbind").unwrap(), "0000:03:00.0");
    assert_eq!(env.sys.read("bus/pci/drivers_probe").unwrap(), "0000:03:00.0");
}

#[test]
fn udev_helper_bind_of_an_unbound_card_only_probes() {
    let Some(env) = env("udev_helper_bind_of_an_unbound_card_only_probes", &["unshare"]) else {
        return;
    };
    env.sys.add_pci("0000:04:00.0", 0x1e89, 0x0002).unwrap();
    let (rc, _, err) = helper(&env, "bind 0000:04:00.0", &[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        env.sys.read("devices/pci0000:00/0000:04:00.0/driver_override").unwrap(),
        "vfio-pci"
    );
    assert_eq!(env.sys.read("bus/pci/drivers_probe").unwrap(), "0000:04:00.0");
    assert_eq!(env.sys.read("bus/pci/drivers/vfio-pci/unbind").unwrap(), "");
}

#[test]
fn udev_helper_refuses_foreign_devices_and_malformed_arguments_without_writing() {
    let Some(env) = env(
        "udev_helper_refuses_foreign_devices_and_malformed_arguments_without_writing",
        &["unshare"],
    ) else {
        return;
    };
    env.sys.add_pci("0000:08:00.0", 0x8086, 0x10d3).unwrap();
    let (rc, _, err) = helper(&env, "bind 0000:08:00.0", &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("is not a Quantis card"), "{err}");
    assert_untouched(&env.sys, "0000:08:00.0");

    for bad in ["../../../etc", "0000:08:00.0/../x", "'0000:08:00.0 0000:09:00.0'", "''"] {
        let (rc, _, err) = helper(&env, &format!("bind {bad}"), &[]);
        assert_eq!(rc, 2, "bind {bad}: {err}");
        assert!(err.contains("is not a PCI address"), "{err}");
    }
    assert_untouched(&env.sys, "0000:08:00.0");

    let (rc, _, err) = helper(&env, "bind 0000:0a:00.0", &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("no PCI device 0000:0a:00.0"), "{err}");

    for bad in ["x", "'7;reboot'", "''"] {
        let (rc, out, _) = helper(&env, &format!("units {bad}"), &[]);
        assert_eq!(rc, 2, "units {bad}");
        assert_eq!(out, "");
    }
    let (rc, _, err) = helper(&env, "frobnicate 0000:08:00.0", &[]);
    assert_eq!(rc, 2);
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn udev_helper_release_gives_the_card_back() {
    let Some(env) = env("udev_helper_release_gives_the_card_back", &["unshare"]) else {
        return;
    };
    env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    env.sys.bind_pci("0000:03:00.0", "vfio-pci").unwrap();
    let (rc, _, err) = helper(&env, "release 0000:03:00.0", &[]);
    assert_eq!(rc, 0, "{err}");
    // An empty line clears driver_override (sysfs-bus-pci ABI).
    assert_eq!(env.sys.read("devices/pci0000:00/0000:03:00.0/driver_override").unwrap(), "\n");
    assert_eq!(env.sys.read("bus/pci/drivers/vfio-pci/unbind").unwrap(), "0000:03:00.0");
    assert_eq!(env.sys.read("bus/pci/drivers_probe").unwrap(), "0000:03:00.0");
}

#[test]
fn udev_helper_check_explains_what_is_missing() {
    let Some(env) = env("udev_helper_check_explains_what_is_missing", &["unshare"]) else {
        return;
    };
    env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    env.sys.bind_pci("0000:03:00.0", "quantis_pci").unwrap();
    let (rc, _, err) = helper(&env, "check 0000:03:00.0", &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("bound to 'quantis_pci', not vfio-pci"), "{err}");

    env.sys.add_pci("0000:04:00.0", 0x1e89, 0x0003).unwrap();
    env.sys.bind_pci("0000:04:00.0", "vfio-pci").unwrap();
    let (rc, _, err) = helper(&env, "check 0000:04:00.0", &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("has no IOMMU group"), "{err}");

    env.sys.add_vfio_group(11, &["0000:04:00.0"], 240, 3).unwrap();
    let (rc, _, err) = helper(&env, "check 0000:04:00.0", &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("/dev/vfio/11 does not exist"), "{err}");

    let (rc, _, err) = helper(&env, "check 0000:04:00.0", &[("vfio/11", 240, 3)]);
    assert_eq!(rc, 0, "{err}");
}

#[test]
fn udev_helper_lists_only_quantis_cards() {
    let Some(env) = env("udev_helper_lists_only_quantis_cards", &["unshare"]) else {
        return;
    };
    env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    env.sys.add_pci("0000:08:00.0", 0x8086, 0x10d3).unwrap();
    env.sys.add_pci("0000:09:00.0", 0x1e89, 0x0003).unwrap();
    let (rc, out, err) = helper(&env, "list", &[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, "0000:03:00.0\n0000:09:00.0\n");
    let (rc, out, _) = helper(&env, "units 42", &[]);
    assert_eq!((rc, out.as_str()), (1, ""), "a group that does not exist holds no card");
}

#[test]
fn udev_helper_ring_indices_follow_pci_order_and_stick_to_the_card() {
    let Some(env) =
        env("udev_helper_ring_indices_follow_pci_order_and_stick_to_the_card", &["unshare"])
    else {
        return;
    };
    for addr in ["0000:03:00.0", "0000:04:00.0", "0000:05:00.0", "0000:09:00.0"] {
        env.sys.add_pci(addr, 0x1e89, 0x0002).unwrap();
    }
    env.sys.add_pci("0000:07:00.0", 0x8086, 0x10d3).unwrap();
    // qrng1 is still claimed by a card that has since gone (claims last for the boot).
    let body = format!(
        "set +e\n{HELPER} ring 0000:03:00.0; echo \"RESULT nodir $?\"\nset -e\n\
         mkdir -p /run/qrng/cards\nln -s 0000:0f:00.0 /run/qrng/cards/qrng1\n\
         for a in 05 03 09 05 04 03; do echo \"RESULT ring $a $({HELPER} ring 0000:$a:00.0)\"; done\n\
         set +e\n{HELPER} ring 0000:07:00.0 2>/dev/null; echo \"RESULT foreign $?\"\n\
         for c in /run/qrng/cards/*; do echo \"RESULT claim $(basename $c) $(readlink $c)\"; done"
    );
    let (stdout, stderr) = run_ns(&env, &[], &body);
    let t = UdevTest::parse(&stdout, &stderr);
    assert_eq!(t.result("nodir"), Some("1"), "no claims directory must be an error");
    let rings: Vec<&str> = t.results.iter().filter_map(|r| r.strip_prefix("ring ")).collect();
    assert_eq!(
        rings,
        [
            "05 /run/qrng/qrng2.ring", // its position among the four cards
            "03 /run/qrng/qrng0.ring",
            "09 /run/qrng/qrng3.ring",
            "05 /run/qrng/qrng2.ring", // again: the same ring
            "04 /run/qrng/qrng4.ring", // position 1 is taken: lowest free
            "03 /run/qrng/qrng0.ring",
        ],
        "{stderr}"
    );
    assert_eq!(t.result("foreign"), Some("1"), "a foreign device must get no ring");
    let claims: Vec<&str> = t.results.iter().filter_map(|r| r.strip_prefix("claim ")).collect();
    assert_eq!(
        claims,
        [
            "qrng0 0000:03:00.0",
            "qrng1 0000:0f:00.0",
            "qrng2 0000:05:00.0",
            "qrng3 0000:09:00.0",
            "qrng4 0000:04:00.0"
        ]
    );
}

#[test]
fn udev_helper_start_refuses_an_unusable_card_before_claiming_a_ring() {
    let Some(env) =
        env("udev_helper_start_refuses_an_unusable_card_before_claiming_a_ring", &["unshare"])
    else {
        return;
    };
    env.sys.add_pci("0000:03:00.0", 0x179a, 0x0001).unwrap();
    let body = format!(
        "mkdir -p /run/qrng/cards\nset +e\n{HELPER} start 0000:03:00.0 2>/run/err; echo \"RESULT rc $?\"\n\
         sed 's/^/RESULT err /' /run/err\necho \"RESULT claims $(ls /run/qrng/cards | wc -l)\""
    );
    let (stdout, stderr) = run_ns(&env, &[], &body);
    let t = UdevTest::parse(&stdout, &stderr);
    assert_eq!(t.result("rc"), Some("1"));
    assert!(t.result("err").is_some_and(|e| e.contains("not vfio-pci")), "{:?}", t.results);
    assert_eq!(t.result("claims"), Some("0"));
}
