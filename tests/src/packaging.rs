//! Support for the packaging tests (`tests/tests/{units,udev,deb}.rs`): find the real system
//! tools, build the binaries the units start, lay out fake sysfs trees, and run commands in a
//! private mount namespace so that udevadm, the udev helper and dpkg act on a fake `/sys` or a
//! throw-away overlay of `/` instead of the host.
//!
//! The tests skip (printing `SKIPPED <test>: <reason>`) only when a tool they drive is absent or
//! when they are not run as root (mount namespaces and bind mounts need it); under
//! `QRNG_REQUIRE_TOOLS=1` they fail instead.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the directory holding `udev/`, `systemd/`, `driver/`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Finds an executable named `name` on PATH or in the sbin directories a non-login PATH may lack.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why a test cannot run here, or `None` if it can: the first missing tool, or not being root.
pub fn missing_prerequisites(tools: &[&str], needs_root: bool) -> Option<String> {
    if let Some(tool) = tools.iter().find(|t| find_tool(t).is_none()) {
        return Some(format!("`{tool}` is not installed"));
    }
    if needs_root && !is_root() {
        return Some("needs root (private mount namespace and bind mounts)".to_owned());
    }
    None
}

/// Prints why `test` is skipped, in a form a CI log search finds. Under `QRNG_REQUIRE_TOOLS=1`
/// (set by `.ci/run`, which installs everything) a test that cannot run fails instead.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("QRNG_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run: {reason} (QRNG_REQUIRE_TOOLS=1: a missing tool is a failure)");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// Stdout and stderr of a finished command as text.
pub fn output_text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `script` with `sh -e` in a new mount namespace whose mounts propagate nowhere
/// (`unshare --mount --propagation private`), so every mount it makes vanishes with it.
pub fn run_in_mount_namespace(script: &str, envs: &[(&str, &str)]) -> io::Result<Output> {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-e", "-c", script])
        .envs(envs.iter().copied())
        .output()
}

/// Builds `quantis-driver`, `qrng-bridge` and `qrng-feeder` with the profile the running test was built with and
/// returns the directory holding them (e.g. `target/debug`). Incremental: cheap after `cargo test`.
pub fn build_binaries() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile-dir>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| io::Error::other(format!("unexpected test binary path {}", exe.display())))?
        .to_path_buf();
    let profile_name =
        profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "-p",
        "quantis-driver",
        "-p",
        "qrng-bridge",
        "-p",
        "qrng-feeder",
        "--bins",
    ]);
    match profile_name.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "cargo build of the binaries failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(profile_dir)
}

/// Parses the number in "→ Overall exposure level for NAME: 3.4 OK" (`systemd-analyze security`).
pub fn parse_exposure(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.contains("Overall exposure level for"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

/// What `udevadm test` printed: the device's final properties, the `run:` commands, and its log.
#[derive(Debug, Default)]
pub struct UdevTest {
    pub properties: BTreeMap<String, String>,
    pub run: Vec<String>,
    pub log: String,
    /// Lines the calling script printed with the prefix `RESULT ` (prefix removed).
    pub results: Vec<String>,
}

impl UdevTest {
    /// Parses `udevadm test` stdout (`KEY=VALUE` and `run: '…'` lines, plus the calling script's
    /// `RESULT …` lines) and stderr (the debug log).
    pub fn parse(stdout: &str, stderr: &str) -> UdevTest {
        let mut t = UdevTest { log: stderr.to_owned(), ..UdevTest::default() };
        for line in stdout.lines() {
            if let Some(rest) = line.strip_prefix("RESULT ") {
                t.results.push(rest.to_owned());
            } else if let Some(cmd) = line.strip_prefix("run: ") {
                t.run.push(cmd.trim_matches('\'').to_owned());
            } else if let Some((k, v)) = line.split_once('=') {
                if !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    t.properties.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        t
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// Whether the device carries udev tag `tag` (TAGS=:a:b:).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.property("TAGS").is_some_and(|tags| tags.split(':').any(|t| t == tag))
    }

    /// The `RESULT` line starting with `key ` (without the key).
    pub fn result(&self, key: &str) -> Option<&str> {
        self.results.iter().find_map(|r| r.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
    }
}

/// Lines where udev reports a problem parsing `rules_path` ("PATH:LINE Invalid key 'FOO'",
/// "PATH:LINE Unknown group 'x', ignoring"): `udevadm test` exits 0 even then. Per-event trace
/// lines start with the device name instead and are not counted.
pub fn udev_rule_problems(log: &str, rules_path: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.strip_prefix(rules_path)
                .and_then(|r| r.strip_prefix(':'))
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_owned)
        .collect()
}

/// A fake sysfs tree with the files udev and `quantis-vfio` read, to be bind-mounted over `/sys`
/// in a private mount namespace. Writes made through it (driver_override, unbind, drivers_probe)
/// land in ordinary files the test reads back.
#[derive(Debug)]
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// Creates the skeleton under `root`. `bus/pci/drivers/vfio-pci` exists so that the helper
    /// never runs the host's `modprobe`.
    pub fn new(root: &Path) -> io::Result<FakeSysfs> {
        for dir in [
            "devices/pci0000:00",
            "devices/virtual/vfio",
            "bus/pci/devices",
            "bus/pci/drivers/vfio-pci",
            "bus/usb/devices",
            "class/vfio",
            "kernel/iommu_groups",
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::write(root.join("bus/pci/drivers_probe"), "")?;
        fs::write(root.join("bus/pci/drivers/vfio-pci/unbind"), "")?;
        Ok(FakeSysfs { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Adds PCI device `addr` with the given ids; returns its devpath (relative to /sys).
    pub fn add_pci(&self, addr: &str, vendor: u16, device: u16) -> io::Result<String> {
        let devpath = format!("/devices/pci0000:00/{addr}");
        let dir = self.root.join(&devpath[1..]);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("vendor"), format!("0x{vendor:04x}\n"))?;
        fs::write(dir.join("device"), format!("0x{device:04x}\n"))?;
        fs::write(dir.join("class"), "0x100000\n")?;
        fs::write(dir.join("driver_override"), "(null)\n")?;
        fs::write(
            dir.join("uevent"),
            format!(
                "PCI_CLASS=100000\nPCI_ID={vendor:04X}:{device:04X}\nPCI_SLOT_NAME={addr}\n\
                 MODALIAS=pci:v0000{vendor:04X}d0000{device:04X}sv*sd*bc10sc00i00\n"
            ),
        )?;
        symlink("../../../bus/pci", dir.join("subsystem"))?;
        symlink(
            format!("../../../devices/pci0000:00/{addr}"),
            self.root.join("bus/pci/devices").join(addr),
        )?;
        Ok(devpath)
    }

    /// Binds PCI device `addr` to `driver` (creates the driver directory with an `unbind` file).
    pub fn bind_pci(&self, addr: &str, driver: &str) -> io::Result<()> {
        let drv = self.root.join("bus/pci/drivers").join(driver);
        fs::create_dir_all(&drv)?;
        if !drv.join("unbind").exists() {
            fs::write(drv.join("unbind"), "")?;
        }
        symlink(
            format!("../../../bus/pci/drivers/{driver}"),
            self.root.join("devices/pci0000:00").join(addr).join("driver"),
        )
    }

    /// Adds VFIO group `group` (char device `major:minor`, node /dev/vfio/GROUP) holding the PCI
    /// devices `members`; returns its devpath.
    pub fn add_vfio_group(
        &self,
        group: u32,
        members: &[&str],
        major: u32,
        minor: u32,
    ) -> io::Result<String> {
        let devpath = format!("/devices/virtual/vfio/{group}");
        let dir = self.root.join(&devpath[1..]);
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("uevent"),
            format!("MAJOR={major}\nMINOR={minor}\nDEVNAME=vfio/{group}\n"),
        )?;
        fs::write(dir.join("dev"), format!("{major}:{minor}\n"))?;
        symlink("../../../../class/vfio", dir.join("subsystem"))?;
        let group_dir = self.root.join("kernel/iommu_groups").join(group.to_string());
        fs::create_dir_all(group_dir.join("devices"))?;
        for addr in members {
            symlink(
                format!("../../../../devices/pci0000:00/{addr}"),
                group_dir.join("devices").join(addr),
            )?;
            symlink(
                format!("../../../kernel/iommu_groups/{group}"),
                self.root.join("devices/pci0000:00").join(addr).join("iommu_group"),
            )?;
        }
        Ok(devpath)
    }

    /// Adds USB device `name` (e.g. "1-1") with the given ids as /dev/bus/usb/BUS/DEV; returns its
    /// devpath.
    pub fn add_usb(
        &self,
        name: &str,
        vendor: u16,
        product: u16,
        bus: u32,
        dev: u32,
    ) -> io::Result<String> {
        let devpath = format!("/devices/pci0000:00/0000:00:14.0/usb{bus}/{name}");
        let dir = self.root.join(&devpath[1..]);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("idVendor"), format!("{vendor:04x}\n"))?;
        fs::write(dir.join("idProduct"), format!("{product:04x}\n"))?;
        // USB device nodes: major 189, minor (bus - 1) * 128 + (dev - 1) (drivers/usb/core/usb.c).
        let minor = (bus - 1) * 128 + (dev - 1);
        fs::write(
            dir.join("uevent"),
            format!(
                "MAJOR=189\nMINOR={minor}\nDEVNAME=bus/usb/{bus:03}/{dev:03}\nDEVTYPE=usb_device\n\
                 PRODUCT={vendor:x}/{product:x}/100\nBUSNUM={bus:03}\nDEVNUM={dev:03}\n"
            ),
        )?;
        symlink("../../../../../bus/usb", dir.join("subsystem"))?;
        Ok(devpath)
    }

    /// Reads a file of the fake tree (path relative to /sys).
    pub fn read(&self, rel: &str) -> io::Result<String> {
        fs::read_to_string(self.root.join(rel.trim_start_matches('/')))
    }
}

/// A copy of /etc/group in which group `qrng` exists with a gid no other group uses; returns the
/// gid. Bind-mounted over /etc/group inside the namespace so that udev resolves GROUP="qrng".
pub fn group_file_with_qrng(dest: &Path) -> io::Result<u32> {
    let host = fs::read_to_string("/etc/group")?;
    let kept: Vec<&str> = host.lines().filter(|l| !l.starts_with("qrng:")).collect();
    let used: Vec<u32> = kept.iter().filter_map(|l| l.split(':').nth(2)?.parse().ok()).collect();
    let gid = (4242..u32::MAX)
        .find(|g| !used.contains(g))
        .ok_or_else(|| io::Error::other("no free gid"))?;
    let mut text = kept.join("\n");
    text.push_str(&format!("\nqrng:x:{gid}:\n"));
    fs::write(dest, text)?;
    Ok(gid)
}

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Mounts an empty FUSE file system on `dir` the way fuser does when it may call mount(2) itself
/// (an open /dev/fuse passed as `fd=`, `allow_other`): what qrng-bridge needs its privileges for.
/// Returns the /dev/fuse handle (the mount dies with it) and the mount's line in mountinfo.
pub fn mount_fuse_like_fuser(dir: &Path) -> io::Result<(fs::File, String)> {
    use nix::mount::{mount, MsFlags};
    use std::os::fd::AsRawFd;
    let fuse = fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let opts = format!(
        "fd={},rootmode=40000,user_id={},group_id={},allow_other,default_permissions",
        fuse.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    mount(
        Some("qrng"),
        dir,
        Some("fuse.qrng"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mount fuse on {}: {e}", dir.display())))?;
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let dir_text = dir.display().to_string();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir_text.as_str()) && l.contains("fuse.qrng"))
        .ok_or_else(|| {
            io::Error::other(format!("no fuse.qrng mount at {dir_text} in mountinfo"))
        })?;
    Ok((fuse, line.to_owned()))
}

/// Sends `READY=1` to systemd's notify socket if there is one (sd_notify(3) without libsystemd).
pub fn notify_ready() -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.send_to(b"READY=1", PathBuf::from(path))?;
    Ok(())
}

/// Polls `check` every 200 ms until it returns `Some` or `limit` has passed (a bound on waiting,
/// not a speed assertion).
pub fn wait_for<T>(limit: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Builds the `quantis-qrng` .deb with cargo-deb into `out_dir` from the binaries the tests use
/// (`cargo deb --no-build --profile <the test profile>`); returns its path.
pub fn build_deb(out_dir: &Path) -> io::Result<PathBuf> {
    build_deb_version(out_dir, None)
}

/// [`build_deb`] with the package version set to `version` (`cargo deb --deb-version`), e.g. a
/// later one to test upgrades. `out_dir` must not hold another .deb.
pub fn build_deb_version(out_dir: &Path, version: Option<&str>) -> io::Result<PathBuf> {
    // One cargo-deb at a time: `--strip` writes stripped copies of the binaries into the target
    // directory, and two runs at once can package each other's half-written copies.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bins = build_binaries()?;
    let profile = match bins.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "deb",
            "-p",
            "quantis-driver",
            "--no-build",
            "--strip",
            "--fast",
            "--profile",
            &profile,
        ])
        .args(version.map(|v| ["--deb-version", v]).into_iter().flatten())
        .arg("-o")
        .arg(out_dir)
        .output()?;
    let (stdout, stderr) = output_text(&out);
    if !out.status.success() {
        return Err(io::Error::other(format!("cargo deb failed:\n{stdout}\n{stderr}")));
    }
    fs::read_dir(out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| {
            io::Error::other(format!("cargo deb wrote no .deb into {}", out_dir.display()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_parsed_from_the_summary_line() {
        let out =
            "✗ UMask= ...   0.1\n\n→ Overall exposure level for qrng-bridge.service: 3.4 OK 🙂\n";
        assert_eq!(parse_exposure(out), Some(3.4));
        assert_eq!(parse_exposure("no summary here"), None);
    }

    #[test]
    fn udev_problems_are_parse_messages_of_that_file_only() {
        let log = "Reading rules file: /etc/udev/rules.d/70-x.rules\n\
                   /etc/udev/rules.d/70-x.rules:3 Invalid key 'FOO'\n\
                   0000:03:00.0: /etc/udev/rules.d/70-x.rules:5 RUN 'x'\n\
                   /etc/udev/rules.d/80-other.rules:1 Invalid key 'BAR'\n";
        assert_eq!(
            udev_rule_problems(log, "/etc/udev/rules.d/70-x.rules"),
            vec!["/etc/udev/rules.d/70-x.rules:3 Invalid key 'FOO'".to_owned()]
        );
    }

    #[test]
    fn udevadm_test_output_is_split_into_properties_and_runs() {
        let t = UdevTest::parse(
            "DEVPATH=/devices/x\nTAGS=:systemd:\nrun: '/bin/echo a b'\nRESULT node 42 660\n",
            "log",
        );
        assert_eq!(t.property("DEVPATH"), Some("/devices/x"));
        assert!(t.has_tag("systemd"));
        assert!(!t.has_tag("uaccess"));
        assert_eq!(t.run, vec!["/bin/echo a b".to_owned()]);
        assert_eq!(t.result("node"), Some("42 660"));
    }
}
