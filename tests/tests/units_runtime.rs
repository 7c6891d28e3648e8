//! The installed units run by a real systemd 252 as PID 1: the package is installed with dpkg in a
//! `systemd-nspawn --boot` container whose root is an overlay of `/` (upper layer on a tmpfs in a
//! private mount namespace, so the host is not touched), then the units are started for real.
//!
//! Only `ExecStart` is swapped, for a stand-in (this test binary in a child mode) because the
//! container has no Quantis card and no VFIO: every sandbox setting of the installed unit applies.
//! - qrng-bridge.service: the stand-in mounts FUSE on /run/qrng/dev exactly as fuser does and
//!   reports READY. Checked: the mount is visible outside the unit (no mount namespace), the
//!   process is user qrng with only CAP_SYS_ADMIN, no_new_privs and a seccomp filter; after
//!   SIGKILL systemd restarts it and exactly one mount remains; a dead mount left by a bridge
//!   killed outside systemd is detached by ExecStartPre.
//! - quantis-driver@.service (a copy without `BindsTo=`, the card's device unit never appears
//!   here): the stand-in records what the sandbox lets it see and do. Checked: user qrng, no
//!   capabilities, RLIMIT_MEMLOCK 8 MiB, only /dev/vfio and pseudo devices in /dev, only the
//!   loopback interface, writes only to /run/qrng and /var/lib/qrng, no /home.
//! - The real binaries on the simulator under the same units: quantis-driver (`--device
//!   sim:pcie-16m`) reaches READY and writes its ring 0640 qrng:qrng; qrng-bridge (the shipped
//!   ExecStart once it takes `--ring-dir`, until then `--ring /run/qrng/qrng0.ring`) serves that
//!   ring over HTTP on 127.0.0.1:8080 inside the container's private network, its HTTP workers
//!   pinned to their CPUs despite the unit's `~@resources` filter; the driver stops cleanly.
//! - Upgrade with both running (`dpkg -i` of the same package with a later version): postinst
//!   restarts the driver (`try-restart quantis-driver@*`) and the bridge; the ring keeps its unread
//!   bytes (same head, same bytes, the driver re-attached with a new epoch), and the first bytes the
//!   bridge serves afterwards are exactly those.
//! - `dpkg -P` with systemd running stops the bridge; its mount, /run/qrng, /var/lib/qrng,
//!   /dev/qrng0 and the units are gone.
//!
//! Not checkable here: the device cgroup (DeviceAllow=) is not enforced inside this container.

use qrng_e2e::packaging::{
    build_deb, build_deb_version, missing_prerequisites, mount_fuse_like_fuser, notify_ready,
    output_text, skip, wait_for,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Generous bound for the container to boot or a unit to change state (not a speed check).
const LIMIT: Duration = Duration::from_secs(120);
const STANDIN: &str = "/usr/local/bin/qrng-standin";
const STANDIN_ARGS: &str = "units_standin_child --exact --ignored --nocapture --test-threads=1";
/// The version the package is upgraded to (its own is 0.1.0-1).
const NEXT_VERSION: &str = "0.1.1-1";
/// Unread ring bytes compared across the upgrade.
const UNREAD: usize = 4096;

/// A ring file's indices and its first unread bytes (layout: docs/ring-abi.md).
#[derive(Debug)]
struct RingSnapshot {
    epoch: u64,
    head: u64,
    unread: Vec<u8>,
}

/// Reads the ring at `path` from outside both processes: the consumer's head, then the producer's
/// tail, then up to `max` bytes from the head (committed bytes, which the producer never rewrites
/// before the consumer has moved past them).
fn ring_snapshot(path: &Path, max: usize) -> RingSnapshot {
    use qrng_ring::layout::{DATA_OFFSET, OFF_CAPACITY, OFF_EPOCH, OFF_HEAD, OFF_TAIL};
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let word = |off: u64| {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, off).expect("read the ring header");
        u64::from_ne_bytes(b)
    };
    let capacity = word(OFF_CAPACITY);
    let epoch = word(OFF_EPOCH);
    let head = word(OFF_HEAD);
    let tail = word(OFF_TAIL);
    let n = usize::try_from(tail.saturating_sub(head)).unwrap_or(max).min(max);
    let mut unread = vec![0u8; n];
    let start = head % capacity;
    let first = n.min(usize::try_from(capacity - start).unwrap_or(n));
    f.read_exact_at(&mut unread[..first], DATA_OFFSET + start).expect("read the ring data");
    f.read_exact_at(&mut unread[first..], DATA_OFFSET).expect("read the ring data");
    RingSnapshot { epoch, head, unread }
}

/// Entry point of the stand-in (not a test by itself); `QRNG_STANDIN` selects what it does.
#[test]
#[ignore = "child process of units_run_under_systemd_in_a_container"]
fn units_standin_child() {
    match std::env::var("QRNG_STANDIN").as_deref() {
        Ok("bridge") => standin_bridge(),
        Ok("driver") => standin_driver(),
        Ok("get") => standin_get(),
        _ => {} // run by `cargo test -- --ignored` on its own: nothing to do
    }
}

/// Mounts FUSE like the bridge, says READY, and waits to be killed.
fn standin_bridge() {
    let dir =
        PathBuf::from(std::env::var_os("QRNG_CHILD_MOUNTPOINT").expect("QRNG_CHILD_MOUNTPOINT"));
    let (_fuse, line) = mount_fuse_like_fuser(&dir).expect("mount FUSE");
    println!("STANDIN-MOUNTED {line}");
    notify_ready().expect("notify READY");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Records the sandbox as the driver sees it in /run/qrng/probe, says READY and exits.
fn standin_driver() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let memlock = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("")
        .to_owned();
    let names = |dir: &str| {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.join(",")
    };
    let net = fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let mut ifaces: Vec<&str> =
        net.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    ifaces.sort();
    let writable = |dir: &str| {
        let p = Path::new(dir).join(".qrng-probe");
        let ok = fs::write(&p, b"x").is_ok();
        let _ = fs::remove_file(&p);
        ok
    };
    let facts = [
        format!("uid={}", field("Uid:")),
        format!("capeff={}", field("CapEff:")),
        format!("capbnd={}", field("CapBnd:")),
        format!("nonewprivs={}", field("NoNewPrivs:")),
        format!("seccomp={}", field("Seccomp:")),
        format!("memlock={memlock}"),
        format!("dev={}", names("/dev")),
        format!("vfio={}", names("/dev/vfio")),
        format!("net={}", ifaces.join(",")),
        format!("home={}", names("/home")),
        format!("w_run_qrng={}", writable("/run/qrng")),
        format!("w_var_lib_qrng={}", writable("/var/lib/qrng")),
        format!("w_etc={}", writable("/etc")),
        format!("w_usr={}", writable("/usr/local")),
        format!("w_var_lib={}", writable("/var/lib")),
    ];
    fs::write("/run/qrng/probe", facts.join("\n") + "\n").expect("write /run/qrng/probe");
    notify_ready().expect("notify READY");
}

/// `GET $QRNG_GET_PATH` from 127.0.0.1:8080 (HTTP/1.0, the container has no curl guarantee);
/// prints the status line and body.
fn standin_get() {
    use std::io::{Read, Write};
    let path = std::env::var("QRNG_GET_PATH").expect("QRNG_GET_PATH");
    let mut s = std::net::TcpStream::connect("127.0.0.1:8080").expect("connect to the bridge");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the response");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    println!("STATUS {}", head.lines().next().unwrap_or(""));
    println!("BODY {body}");
}

/// A booted container; dropping it shuts it down.
struct Container {
    nspawn: Child,
    leader: u32,
    _work: tempfile::TempDir,
}

impl Container {
    fn boot() -> Container {
        let work = tempfile::tempdir().unwrap();
        let script = r#"
B="$WORK/ns"
mkdir -p "$B"
mount -t tmpfs tmpfs "$B"
mkdir -p "$B/up" "$B/work" "$B/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/up,workdir=$B/work" "$B/root"
exec systemd-nspawn -D "$B/root" --register=no $KEEP_UNIT --link-journal=no --boot --quiet \
    --console=passive --bind=/dev/fuse --private-network --machine="$NAME"
"#;
        let nspawn = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-e", "-c", script])
            .env("WORK", work.path())
            .env("NAME", format!("qrngtest{}", std::process::id()))
            // Without systemd on the host there is no one to create a scope unit for the container:
            // nspawn then stays in its caller's cgroup. With systemd, nspawn asks it for a scope.
            .env(
                "KEEP_UNIT",
                if Path::new("/run/systemd/system").exists() { "" } else { "--keep-unit" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd-nspawn");
        let pid = nspawn.id();
        let mut c = Container { nspawn, leader: 0, _work: work };
        c.leader = wait_for(LIMIT, || container_init(pid))
            .expect("the container's systemd did not appear");
        // `is-system-running --wait` needs D-Bus, which is not up early in the boot: poll instead.
        let state = wait_for(LIMIT, || {
            let state = output_text(&c.sh("systemctl is-system-running")).0.trim().to_owned();
            (!state.is_empty() && state != "initializing" && state != "starting").then_some(state)
        })
        .expect("the container did not finish booting");
        let failed = output_text(&c.sh("systemctl --failed --no-legend")).0;
        assert!(
            state == "running" || state == "degraded",
            "container (PID 1 = host PID {}) is {state}:\n{failed}",
            c.leader
        );
        if state == "degraded" {
            eprintln!("container degraded (not ours):\n{failed}");
        }
        c
    }

    /// Runs `script` inside the container (all its namespaces). A script still running after
    /// 120 s is killed (and fails), so a hang inside the container fails the test instead of
    /// stalling it.
    fn sh(&self, script: &str) -> Output {
        Command::new("timeout")
            .args([
                "-s",
                "KILL",
                "120",
                "nsenter",
                "-t",
                &self.leader.to_string(),
                "-a",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap()
    }

    /// Like `sh`, but the test fails unless the script succeeds; returns stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let (stdout, stderr) = output_text(&out);
        assert!(out.status.success(), "in the container, `{script}` failed:\n{stdout}\n{stderr}");
        stdout
    }

    /// A path inside the container, seen from the host.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.leader))
    }

    /// The `fuse.qrng` mounts at /run/qrng/dev in the mount namespace of the container's PID 1, i.e.
    /// as every process outside the bridge's unit sees them.
    fn qrng_mounts(&self) -> Vec<String> {
        let info =
            fs::read_to_string(format!("/proc/{}/mountinfo", self.leader)).unwrap_or_default();
        info.lines()
            .filter(|l| l.contains("fuse.qrng") && l.split(' ').nth(4) == Some("/run/qrng/dev"))
            .map(str::to_owned)
            .collect()
    }

    fn main_pid(&self, unit: &str) -> u32 {
        self.ok(&format!("systemctl show -p MainPID --value {unit}")).trim().parse().unwrap_or(0)
    }

    fn wait_active(&self, unit: &str, not_pid: u32) -> u32 {
        wait_for(LIMIT, || {
            let state = self.ok(&format!("systemctl is-active {unit} || true"));
            let pid = self.main_pid(unit);
            (state.trim() == "active" && pid != 0 && pid != not_pid).then_some(pid)
        })
        .unwrap_or_else(|| panic!("{unit} did not become active:\n{}", self.journal(unit)))
    }

    fn journal(&self, unit: &str) -> String {
        output_text(&self.sh(&format!("journalctl -u {unit} --no-pager -o cat | tail -30"))).0
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM makes nspawn shut the container down in order; SIGKILL if that takes too long.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if wait_for(Duration::from_secs(30), || self.nspawn.try_wait().ok().flatten()).is_none() {
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// The container's PID 1 (a `systemd` process that is PID 1 in its namespace) under nspawn `pid`.
fn container_init(nspawn: u32) -> Option<u32> {
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| {
            let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let is_init = status.lines().any(|l| l == "Name:\tsystemd")
                && status.lines().any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"));
            is_init && descends_from(p, nspawn)
        })
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..16 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let Some(ppid) = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:\t"))
            .and_then(|p| p.trim().parse().ok())
        else {
            return false;
        };
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

/// `Key:\tvalue` from /proc/PID/status inside the container.
fn proc_status(c: &Container, pid: u32, key: &str) -> String {
    let status = c.ok(&format!("cat /proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[test]
fn units_run_under_systemd_in_a_container() {
    let test = "units_run_under_systemd_in_a_container";
    if let Some(reason) = missing_prerequisites(
        &["systemd-nspawn", "nsenter", "unshare", "cargo-deb", "dpkg-deb"],
        true,
    ) {
        return skip(test, &format!("{reason} (systemd-nspawn: package systemd-container)"));
    }
    if !Path::new("/dev/fuse").exists() {
        return skip(test, "no /dev/fuse on this machine");
    }
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(work.path()).expect("build the package");
    let deb2 = build_deb_version(&work.path().join("next"), Some(NEXT_VERSION))
        .expect("build the later package");
    let c = Container::boot();

    fs::copy(&deb, c.path("/tmp/pkg.deb")).unwrap();
    fs::copy(std::env::current_exe().unwrap(), c.path(STANDIN)).unwrap();
    fs::set_permissions(c.path(STANDIN), fs::Permissions::from_mode(0o755)).unwrap();
    // An image's policy-rc.d (Docker's refuses every action) would keep the maintainer scripts from
    // starting and stopping units; this is about a booted system, so drop it in the container.
    let install = c.sh("rm -f /usr/sbin/policy-rc.d; dpkg -i /tmp/pkg.deb");
    let (stdout, stderr) = output_text(&install);
    assert!(install.status.success(), "dpkg -i with systemd as PID 1 failed:\n{stdout}\n{stderr}");
    assert_eq!(c.ok("systemctl is-enabled qrng-bridge.service").trim(), "enabled");
    let qrng_uid = c.ok("id -u qrng").trim().to_owned();

    // ---- the bridge ----
    c.ok(&format!(
        "mkdir -p /etc/systemd/system/qrng-bridge.service.d && printf '%s\\n' '[Service]' 'ExecStart=' \
         'ExecStart={STANDIN} {STANDIN_ARGS}' \
         'Environment=QRNG_STANDIN=bridge QRNG_CHILD_MOUNTPOINT=/run/qrng/dev' \
         > /etc/systemd/system/qrng-bridge.service.d/standin.conf && systemctl daemon-reload && \
         systemctl reset-failed qrng-bridge.service; systemctl restart qrng-bridge.service"
    ));
    let pid = c.wait_active("qrng-bridge.service", 0);
    let mounts = c.qrng_mounts();
    assert_eq!(mounts.len(), 1, "the bridge's mount must be visible outside the unit: {mounts:#?}");
    assert!(mounts[0].contains("allow_other"), "{}", mounts[0]);
    assert_eq!(proc_status(&c, pid, "Uid:"), qrng_uid);
    assert_eq!(proc_status(&c, pid, "CapEff:"), "0000000000200000", "exactly CAP_SYS_ADMIN");
    assert_eq!(proc_status(&c, pid, "CapBnd:"), "0000000000200000");
    assert_eq!(proc_status(&c, pid, "NoNewPrivs:"), "1");
    assert_eq!(proc_status(&c, pid, "Seccomp:"), "2");

    // Killed: restarted by systemd, and still exactly one mount.
    c.ok("systemctl kill -s KILL qrng-bridge.service");
    let pid2 = c.wait_active("qrng-bridge.service", pid);
    assert_eq!(c.qrng_mounts().len(), 1, "after a restart: {:#?}", c.qrng_mounts());

    // Stopped: unmounted.
    c.ok("systemctl stop qrng-bridge.service");
    assert_eq!(c.qrng_mounts(), Vec::<String>::new(), "mount left after stop");

    // A dead mount left by a bridge killed outside systemd: the next start detaches it.
    c.ok(&format!(
        "setpriv --reuid=qrng --regid=qrng --clear-groups --inh-caps=+sys_admin --ambient-caps=+sys_admin \
         env QRNG_STANDIN=bridge QRNG_CHILD_MOUNTPOINT=/run/qrng/dev {STANDIN} {STANDIN_ARGS} >/dev/null 2>&1 & \
         p=$!; for i in $(seq 100); do grep -q ' /run/qrng/dev .*fuse.qrng' /proc/self/mountinfo && break; sleep 0.1; done; \
         kill -9 $p; wait $p; ! ls /run/qrng/dev 2>/tmp/ls.err; grep -q 'not connected' /tmp/ls.err"
    ));
    assert_eq!(c.qrng_mounts().len(), 1, "the dead mount should be there before the start");
    c.ok("systemctl start qrng-bridge.service");
    c.wait_active("qrng-bridge.service", pid2);
    assert_eq!(c.qrng_mounts().len(), 1, "dead mount not replaced: {:#?}", c.qrng_mounts());
    c.ok("systemctl stop qrng-bridge.service");

    // ---- the driver ----
    c.ok(&format!(
        "mkdir -p /dev/vfio && mknod -m 666 /dev/vfio/vfio c 10 196 && mknod -m 660 /dev/vfio/7 c 240 0 && \
         chgrp qrng /dev/vfio/7 && \
         sed -e '/^BindsTo=/d' -e 's|^ExecStart=.*|ExecStart={STANDIN} {STANDIN_ARGS}|' \
             -e 's|^\\[Service\\]$|[Service]\\nEnvironment=QRNG_STANDIN=driver|' \
             /usr/lib/systemd/system/quantis-driver@.service > /etc/systemd/system/quantis-probe@.service && \
         systemctl daemon-reload && systemctl start quantis-probe@0000:03:00.0.service"
    ));
    let probe = fs::read_to_string(c.path("/run/qrng/probe")).unwrap_or_else(|e| {
        panic!("no probe output ({e}):\n{}", c.journal("quantis-probe@0000:03:00.0.service"))
    });
    let fact = |k: &str| {
        probe
            .lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {k} in probe:\n{probe}"))
            .to_owned()
    };
    assert_eq!(fact("uid"), qrng_uid);
    assert_eq!(fact("capeff"), "0000000000000000");
    assert_eq!(fact("capbnd"), "0000000000000000");
    assert_eq!(fact("nonewprivs"), "1");
    assert_eq!(fact("seccomp"), "2");
    assert_eq!(fact("memlock"), (8u64 << 20).to_string(), "LimitMEMLOCK=8M");
    assert_eq!(fact("vfio"), "7,vfio", "the VFIO nodes must be visible");
    let dev = fact("dev");
    assert!(
        !dev.split(',').any(|d| d == "fuse"),
        "a host device leaked into the driver's /dev: {dev}"
    );
    assert!(dev.split(',').any(|d| d == "null"), "{dev}");
    assert_eq!(fact("net"), "lo", "PrivateNetwork");
    assert_eq!(fact("home"), "", "ProtectHome");
    assert_eq!(fact("w_run_qrng"), "true");
    assert_eq!(fact("w_var_lib_qrng"), "true");
    assert_eq!(fact("w_etc"), "false", "ProtectSystem=strict");
    assert_eq!(fact("w_usr"), "false");
    assert_eq!(fact("w_var_lib"), "false");

    // The shipped ExecStart (the helper) runs inside the sandbox and refuses, in one clear journal
    // line, a card that is not there (the container has no Quantis card).
    let start = c.sh("sed -e '/^BindsTo=/d' /usr/lib/systemd/system/quantis-driver@.service \
             > /etc/systemd/system/quantis-shipped@.service && systemctl daemon-reload && \
         systemctl start quantis-shipped@0000:03:00.0.service");
    assert!(!start.status.success(), "a driver for an absent card must not start");
    c.ok("systemctl stop quantis-shipped@0000:03:00.0.service");
    let journal = c.journal("quantis-shipped@0000:03:00.0.service");
    assert!(
        journal.contains("quantis-vfio: no PCI device 0000:03:00.0 in /sys/bus/pci/devices"),
        "{journal}"
    );

    // ---- the real binaries on the simulator, under the same sandboxes ----
    // The driver: its unit with the card swapped for the simulator, as a local copy of the
    // template (/etc overrides /usr/lib) so that the package's scripts act on it as on a card's.
    // READY means it opened the device, passed its start-up tests and published, all inside the
    // sandbox.
    c.ok(
        "systemctl stop qrng-bridge.service; rm -rf /etc/systemd/system/qrng-bridge.service.d && \
         sed -e '/^BindsTo=/d' -e 's|^ExecStart=.*|ExecStart=/usr/bin/quantis-driver --device sim:pcie-16m --ring /run/qrng/qrng0.ring|' \
             /usr/lib/systemd/system/quantis-driver@.service > /etc/systemd/system/quantis-driver@.service && \
         systemctl daemon-reload && systemctl start quantis-driver@sim0.service"
    );
    let ring = c.ok("stat -c '%U %G %a' /run/qrng/qrng0.ring");
    assert_eq!(ring.trim(), "qrng qrng 640", "the driver's ring");
    // The bridge: the shipped ExecStart once the bridge takes --ring-dir, else one ring by name.
    let help = c.ok("/usr/bin/qrng-bridge --help");
    if !help.contains("--ring-dir") {
        eprintln!(
            "qrng-bridge has no --ring-dir yet: ExecStart swapped for --ring /run/qrng/qrng0.ring"
        );
        c.ok(
            "mkdir -p /etc/systemd/system/qrng-bridge.service.d && printf '%s\\n' '[Service]' 'ExecStart=' \
             'ExecStart=/usr/bin/qrng-bridge --ring /run/qrng/qrng0.ring --mount /run/qrng/dev --listen 127.0.0.1:8080' \
             > /etc/systemd/system/qrng-bridge.service.d/ring.conf && systemctl daemon-reload",
        );
    }
    c.ok("systemctl reset-failed qrng-bridge.service; systemctl start qrng-bridge.service");
    c.wait_active("qrng-bridge.service", 0);
    let get = |path: &str| {
        c.ok(&format!("QRNG_STANDIN=get QRNG_GET_PATH='{path}' {STANDIN} {STANDIN_ARGS}"))
    };
    let devices = get("/api/v1/devices");
    assert!(
        devices.lines().any(|l| l.contains("STATUS HTTP/") && l.contains(" 200 ")),
        "{devices}"
    );
    assert!(
        devices.contains("\"name\":\"qrng0\""),
        "the bridge does not serve the driver's ring: {devices}"
    );
    let bytes = get("/api/v1/random/bytes?length=16");
    assert!(
        bytes.lines().any(|l| l.contains("STATUS HTTP/") && l.contains(" 200 ")),
        "{bytes}\n{}",
        c.journal("qrng-bridge.service")
    );
    // The HTTP workers pin themselves under the unit's system call filter (sched_setaffinity
    // is in @resources, denied, and allowed back by name): with one worker per CPU each worker
    // thread may run on one CPU only.
    let journal = c.journal("qrng-bridge.service");
    assert!(!journal.contains("cannot pin"), "pinning refused under the unit:\n{journal}");
    let bridge = c.main_pid("qrng-bridge.service");
    let threads = c.ok(&format!(
        "for t in /proc/{bridge}/task/*; do echo $(cat $t/comm) $(awk '/^Cpus_allowed_list/ {{print $2}}' $t/status); done"
    ));
    let workers: Vec<&str> = threads.lines().filter(|l| l.starts_with("qrng-http-")).collect();
    assert!(!workers.is_empty(), "no HTTP worker threads: {threads}");
    if journal.contains("HTTP workers pinned") {
        for w in &workers {
            let cpus = w.split_whitespace().nth(1).unwrap_or("");
            assert!(cpus.parse::<usize>().is_ok(), "worker not pinned to one CPU: {w}\n{threads}");
        }
    } else {
        assert!(journal.contains("HTTP workers not pinned"), "{journal}");
    }

    // ---- upgrade with both running: units restart, the ring's unread bytes survive ----
    let ring_file = c.path("/run/qrng/qrng0.ring");
    let before = wait_for(LIMIT, || {
        let s = ring_snapshot(&ring_file, UNREAD);
        (s.unread.len() == UNREAD).then_some(s)
    })
    .expect("the driver publishes into its ring");
    let driver_pid = c.main_pid("quantis-driver@sim0.service");
    let bridge_pid = c.main_pid("qrng-bridge.service");
    fs::copy(&deb2, c.path("/tmp/pkg2.deb")).unwrap();
    let upgrade = c.sh("dpkg -i /tmp/pkg2.deb");
    let (stdout, stderr) = output_text(&upgrade);
    assert!(upgrade.status.success(), "upgrade with systemd as PID 1 failed:\n{stdout}\n{stderr}");
    assert_eq!(c.ok("dpkg-query -W -f='${Version}' quantis-qrng").trim(), NEXT_VERSION);
    c.wait_active("quantis-driver@sim0.service", driver_pid);
    c.wait_active("qrng-bridge.service", bridge_pid);
    assert_eq!(c.ok("systemctl is-enabled qrng-bridge.service").trim(), "enabled");
    let after = ring_snapshot(&ring_file, UNREAD);
    assert!(after.epoch > before.epoch, "the driver did not re-attach: {after:?}");
    assert_eq!(after.head, before.head, "bytes were consumed or dropped across the restarts");
    assert!(after.unread == before.unread, "the unread bytes changed across the upgrade");
    // The restarted bridge serves exactly those bytes next (FIFO from the head).
    wait_for(LIMIT, || get("/api/v1/devices").contains("\"health\":\"ok\"").then_some(()))
        .expect("the restarted bridge serves the ring");
    let served = get(&format!("/api/v1/random/bytes?length={UNREAD}&format=hex"));
    let want: String = before.unread.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        served.contains(&format!("\"data\":\"{want}\"")),
        "the first bytes served after the upgrade are not the unread ones:\n{}",
        served.lines().next().unwrap_or("")
    );

    c.ok("systemctl stop quantis-driver@sim0.service");
    assert_eq!(
        c.ok("systemctl show -p Result --value quantis-driver@sim0.service").trim(),
        "success",
        "the driver did not stop cleanly:\n{}",
        c.journal("quantis-driver@sim0.service")
    );

    // ---- removal with systemd running: prerm stops the bridge (and its mount goes) ----
    c.ok(&format!(
        "systemctl stop qrng-bridge.service; mkdir -p /etc/systemd/system/qrng-bridge.service.d && \
         printf '%s\\n' '[Service]' 'ExecStart=' 'ExecStart={STANDIN} {STANDIN_ARGS}' \
         'Environment=QRNG_STANDIN=bridge QRNG_CHILD_MOUNTPOINT=/run/qrng/dev' \
         > /etc/systemd/system/qrng-bridge.service.d/zz-standin.conf && systemctl daemon-reload"
    ));
    c.ok("systemctl start qrng-bridge.service");
    c.wait_active("qrng-bridge.service", 0);
    assert_eq!(c.qrng_mounts().len(), 1);
    let purge = c.sh("dpkg -P quantis-qrng");
    let (stdout, stderr) = output_text(&purge);
    assert!(purge.status.success(), "dpkg -P with systemd as PID 1 failed:\n{stdout}\n{stderr}");
    assert_eq!(c.ok("systemctl is-active qrng-bridge.service || true").trim(), "inactive");
    assert_eq!(c.qrng_mounts(), Vec::<String>::new(), "mount left after purge");
    for gone in
        ["/run/qrng", "/var/lib/qrng", "/dev/qrng0", "/usr/lib/systemd/system/qrng-bridge.service"]
    {
        assert!(fs::symlink_metadata(c.path(gone)).is_err(), "{gone} left after purge");
    }
}
