//! The systemd units (systemd/) checked by the real `systemd-analyze`: `verify` in a root laid
//! out the way the package installs them (the real binaries at their ExecStart paths, the host's
//! own units for the targets they order against), and the `security --offline=true` exposure,
//! which must be at most 4.0 for each unit. Both checks also get a unit they must reject, so that
//! a check which silently passes everything would fail here.

use qrng_e2e::packaging::{
    build_binaries, missing_prerequisites, mount_fuse_like_fuser, output_text, parse_exposure,
    skip, workspace_root,
};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const DRIVER_UNIT: &str = "quantis-driver@.service";
const BRIDGE_UNIT: &str = "qrng-bridge.service";
const FEEDER_UNIT: &str = "qrng-feeder.service";
const MAX_EXPOSURE: f64 = 4.0;

/// Where the host keeps its units (Debian 12: /lib/systemd/system, the same directory as
/// /usr/lib/systemd/system on merged-/usr systems).
fn host_unit_dir() -> PathBuf {
    ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("sysinit.target").exists())
        .expect("no host systemd unit directory with sysinit.target")
}

/// Lays out `root` as a merged-/usr system holding the host's units plus ours, our binaries (from
/// `bins`, if given), the udev helper and umount, at the paths the units name.
fn layout_root(root: &Path, bins: Option<&Path>) {
    let units = root.join("usr/lib/systemd/system");
    for dir in ["usr/bin", "usr/sbin", "usr/libexec/quantis-qrng", "etc/systemd/system"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::create_dir_all(&units).unwrap();
    for (link, target) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        symlink(target, root.join(link)).unwrap();
    }
    let status =
        Command::new("cp").arg("-a").arg(host_unit_dir().join(".")).arg(&units).status().unwrap();
    assert!(status.success(), "copying the host's units failed");
    let ws = workspace_root();
    for unit in [DRIVER_UNIT, BRIDGE_UNIT, FEEDER_UNIT] {
        fs::copy(ws.join("systemd").join(unit), units.join(unit)).unwrap();
    }
    fs::copy(ws.join("udev/quantis-vfio"), root.join("usr/libexec/quantis-qrng/quantis-vfio"))
        .unwrap();
    fs::copy("/bin/umount", root.join("usr/bin/umount")).unwrap();
    // The bridge unit's ExecReload= (procps, a dependency of the package).
    fs::copy("/bin/kill", root.join("usr/bin/kill")).unwrap();
    if let Some(bins) = bins {
        for bin in ["quantis-driver", "qrng-bridge", "qrng-feeder"] {
            fs::copy(bins.join(bin), root.join("usr/bin").join(bin)).unwrap();
        }
    }
}

/// `systemd-analyze verify --root=ROOT` on the units: (exit success, lines about our units).
fn verify(root: &Path) -> (bool, Vec<String>, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(format!("/usr/lib/systemd/system/{DRIVER_UNIT}"))
        .arg(format!("/usr/lib/systemd/system/{BRIDGE_UNIT}"))
        .arg(format!("/usr/lib/systemd/system/{FEEDER_UNIT}"))
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    let all = format!("{stdout}{stderr}");
    // Unknown keys and bad values only warn (exit 0): any line naming our units is a finding.
    let findings = all
        .lines()
        .filter(|l| {
            l.contains("quantis-driver@")
                || l.contains("qrng-bridge")
                || l.contains("qrng-feeder")
                || l.contains("quantis-vfio")
        })
        .map(str::to_owned)
        .collect();
    (out.status.success(), findings, all)
}

#[test]
fn units_verify_cleanly_as_installed() {
    if let Some(reason) = missing_prerequisites(&["systemd-analyze"], false) {
        return skip("units_verify_cleanly_as_installed", &reason);
    }
    let bins = build_binaries().expect("build the binaries");
    let dir = tempfile::tempdir().unwrap();
    layout_root(dir.path(), Some(&bins));
    let (ok, findings, all) = verify(dir.path());
    assert!(ok, "systemd-analyze verify failed:\n{all}");
    assert!(findings.is_empty(), "systemd-analyze verify reports:\n{}", findings.join("\n"));
}

#[test]
fn units_verify_rejects_missing_binaries_and_unknown_keys() {
    if let Some(reason) = missing_prerequisites(&["systemd-analyze"], false) {
        return skip("units_verify_rejects_missing_binaries_and_unknown_keys", &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    layout_root(dir.path(), None);
    let (ok, findings, all) = verify(dir.path());
    assert!(!ok, "verify passed without the binaries:\n{all}");
    assert!(
        findings.iter().any(|l| l.contains("/usr/bin/qrng-bridge is not executable")),
        "{findings:#?}"
    );

    let bins = build_binaries().expect("build the binaries");
    let dir = tempfile::tempdir().unwrap();
    layout_root(dir.path(), Some(&bins));
    let unit = dir.path().join("usr/lib/systemd/system").join(BRIDGE_UNIT);
    let text = fs::read_to_string(&unit).unwrap().replace("RestartSec=", "RestartSecs=");
    fs::write(&unit, text).unwrap();
    let (_, findings, _) = verify(dir.path());
    assert!(findings.iter().any(|l| l.contains("Unknown key 'RestartSecs'")), "{findings:#?}");
}

/// The exposure of `unit` (a file name in `dir`) per `systemd-analyze security --offline=true`.
fn exposure(dir: &Path, unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(dir.join(unit))
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    parse_exposure(&stdout)
        .unwrap_or_else(|| panic!("no exposure for {unit} ({}):\n{stdout}\n{stderr}", out.status))
}

#[test]
fn units_exposure_is_at_most_four() {
    if let Some(reason) = missing_prerequisites(&["systemd-analyze"], false) {
        return skip("units_exposure_is_at_most_four", &reason);
    }
    let dir = workspace_root().join("systemd");
    for unit in [DRIVER_UNIT, BRIDGE_UNIT, FEEDER_UNIT] {
        let level = exposure(&dir, unit);
        println!("{unit}: overall exposure level {level}");
        assert!(level <= MAX_EXPOSURE, "{unit}: exposure {level} > {MAX_EXPOSURE}");
    }
}

#[test]
fn units_exposure_check_flags_an_unhardened_unit() {
    if let Some(reason) = missing_prerequisites(&["systemd-analyze"], false) {
        return skip("units_exposure_check_flags_an_unhardened_unit", &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("plain.service"),
        "[Service]\nExecStart=/usr/bin/qrng-bridge --ring-dir /run/qrng\n",
    )
    .unwrap();
    let level = exposure(dir.path(), "plain.service");
    assert!(level > MAX_EXPOSURE, "an unhardened unit scored {level}");
}

#[test]
fn units_bridge_state_directory_holds_the_default_beacon_database() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = fs::read_to_string(ws.join("systemd").join(BRIDGE_UNIT)).unwrap();
    let dir = unit
        .lines()
        .find_map(|l| l.strip_prefix("StateDirectory="))
        .expect("the bridge unit has a StateDirectory= for the beacon database");
    assert!(unit.lines().any(|l| l == "StateDirectoryMode=0700"), "the database holds a secret");
    let help = Command::new(&qrng_e2e::binaries().bridge).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let want = format!("[default: /var/lib/{dir}/beacon.sqlite]");
    assert!(
        help.contains(&want),
        "--beacon-db's default is not under the unit's StateDirectory ({want}):\n{help}"
    );
}

// ---- the bridge's privileges: enough to mount FUSE for other users, nothing more ----

/// The bridge unit's privilege settings that the mount test below reproduces with setpriv.
const BRIDGE_PRIVILEGES: [&str; 4] = [
    "User=qrng",
    "CapabilityBoundingSet=CAP_SYS_ADMIN",
    "AmbientCapabilities=CAP_SYS_ADMIN",
    "NoNewPrivileges=yes",
];

/// Entry point of the child started by the test below (not a test by itself): mounts a FUSE file
/// system the way fuser does as a non-root user holding CAP_SYS_ADMIN (mount(2) with fd=,
/// allow_other), checks it in mountinfo and detaches it.
#[test]
#[ignore = "child process of units_bridge_privileges_suffice_to_mount_fuse_for_other_users"]
fn units_child_mount_fuse() {
    let Some(dir) = std::env::var_os("QRNG_CHILD_MOUNTPOINT") else {
        return; // run by `cargo test -- --ignored` without the parent: nothing to do
    };
    let dir = PathBuf::from(dir);
    let (_fuse, line) = mount_fuse_like_fuser(&dir)
        .unwrap_or_else(|e| panic!("{e} as uid {}", nix::unistd::getuid()));
    assert!(line.contains("allow_other"), "{line}");
    nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).expect("detach the mount");
    println!("CHILD-MOUNTED {line}");
}

#[test]
fn units_bridge_privileges_suffice_to_mount_fuse_for_other_users() {
    let test = "units_bridge_privileges_suffice_to_mount_fuse_for_other_users";
    if let Some(reason) = missing_prerequisites(&["setpriv", "unshare"], true) {
        return skip(test, &reason);
    }
    if !Path::new("/dev/fuse").exists() {
        return skip(test, "no /dev/fuse on this machine");
    }
    let unit = fs::read_to_string(workspace_root().join("systemd").join(BRIDGE_UNIT)).unwrap();
    for setting in BRIDGE_PRIVILEGES {
        assert!(
            unit.lines().any(|l| l == setting),
            "{BRIDGE_UNIT} lacks {setting}: the test below no longer matches it"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // The test binary, where user nobody can execute it.
    let exe = dir.path().join("child");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();

    let run = |caps: &[&str]| {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "setpriv"])
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"])
            .args(caps)
            .arg(&exe)
            .args([
                "--exact",
                "units_child_mount_fuse",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("QRNG_CHILD_MOUNTPOINT", &mnt)
            .output()
            .unwrap();
        let (stdout, stderr) = output_text(&out);
        (out.status.success() && stdout.contains("CHILD-MOUNTED"), format!("{stdout}\n{stderr}"))
    };
    // As the unit: a non-root uid whose only capability is CAP_SYS_ADMIN, ambient, no new privileges.
    let (mounted, log) = run(&[
        "--inh-caps=-all,+sys_admin",
        "--ambient-caps=-all,+sys_admin",
        "--bounding-set=-all,+sys_admin",
    ]);
    assert!(mounted, "CAP_SYS_ADMIN alone did not mount FUSE:\n{log}");
    // Control: the same user without it cannot.
    let (mounted, log) = run(&["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]);
    assert!(!mounted, "mounted FUSE without CAP_SYS_ADMIN?\n{log}");
    assert!(log.contains("EPERM"), "expected EPERM without CAP_SYS_ADMIN:\n{log}");
}
