//! Helpers for the end-to-end tests: build and locate the real binaries, start and stop
//! `quantis-driver` and `qrng-bridge`, a minimal HTTP/1.1 client, and checks that no byte was
//! served twice.

pub mod egd;
pub mod idq;
pub mod packaging;
pub mod python;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bound on anything a test waits for; reached only when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Whether FUSE tests can run here (root and /dev/fuse). When they cannot, the test prints why
/// and passes, except under `QRNG_REQUIRE_TOOLS=1` (CI), where it fails.
pub fn fuse_available(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let dev = Path::new("/dev/fuse").exists();
    if root && dev {
        return true;
    }
    let why = if root { "/dev/fuse is missing" } else { "mounting FUSE needs root" };
    assert!(std::env::var_os("QRNG_REQUIRE_TOOLS").is_none_or(|v| v != "1"), "{test}: {why}");
    eprintln!("skipping {test}: {why}");
    false
}

/// Paths of the two binaries.
#[derive(Debug)]
pub struct Binaries {
    /// `quantis-driver`.
    pub driver: PathBuf,
    /// `qrng-bridge`.
    pub bridge: PathBuf,
}

/// Builds (once per test process; a no-op when up to date) and locates the binaries in the same
/// profile directory as the running test (`target/debug` or `target/release`).
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>
        let dir =
            exe.parent().and_then(Path::parent).expect("target profile directory").to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        if std::env::var_os("QRNG_E2E_NO_BUILD").is_none() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace).args([
                "build",
                "-q",
                "-p",
                "quantis-driver",
                "-p",
                "qrng-bridge",
            ]);
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build of the binaries failed");
        }
        let bins = Binaries { driver: dir.join("quantis-driver"), bridge: dir.join("qrng-bridge") };
        assert!(
            bins.driver.exists() && bins.bridge.exists(),
            "binaries missing in {}",
            dir.display()
        );
        bins
    })
}

/// A child process that is killed (SIGKILL) if the test drops it still running.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to the file `log` (`RUST_LOG=info`).
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { child, name: name.into(), log }
    }

    /// The process id.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited with status 0.
    pub fn terminate(&mut self) -> bool {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::SIGTERM);
        self.wait_status("exit after SIGTERM").success()
    }

    /// Waits (at most [`PATIENCE`]) for the process to exit and returns its status.
    pub fn wait_status(&mut self, what: &str) -> std::process::ExitStatus {
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < end, "{}: no {what}; log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM, waits for the exit, and returns its status with the log as stderr.
    pub fn terminate_output(self) -> std::process::Output {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::SIGTERM);
        self.wait_output()
    }

    /// Waits for the process to exit by itself and returns its status with the log as stderr.
    pub fn wait_output(mut self) -> std::process::Output {
        let status = self.wait_status("exit");
        std::process::Output { status, stdout: Vec::new(), stderr: self.log().into_bytes() }
    }

    /// Kills with SIGKILL (a crash) and reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself (failing the test after [`PATIENCE`]).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < end, "{} did not exit; log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (reaps it if so).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// Starts `quantis-driver --device SPEC --ring RING` (log next to the ring).
pub fn start_driver(spec: &str, ring: &Path) -> Proc {
    start_driver_sized(spec, ring, "4M")
}

/// [`start_driver`] with a ring of `size` (`--ring-size`, e.g. "32M").
pub fn start_driver_sized(spec: &str, ring: &Path, size: &str) -> Proc {
    start_driver_with(spec, ring, size, &[])
}

/// [`start_driver_sized`] with more driver arguments.
pub fn start_driver_with(spec: &str, ring: &Path, size: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(&binaries().driver);
    cmd.arg("--device").arg(spec).arg("--ring").arg(ring).args(["--ring-size", size]).args(extra);
    let log = ring.with_extension(format!("driver-{}.log", unique()));
    Proc::spawn("quantis-driver", cmd, log)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running bridge.
#[derive(Debug)]
pub struct Bridge {
    /// The process.
    pub proc: Proc,
    /// HTTP address.
    pub addr: SocketAddr,
    /// Mount point of the device files.
    pub mount: PathBuf,
}

/// Starts `qrng-bridge` watching `ring_dir`, mounting at `mount`, listening on `addr`, with extra
/// `args` and, if given, the open-file limit `nofile` (soft, hard); does not wait for it.
pub fn spawn_bridge(
    ring_dir: &Path,
    mount: &Path,
    addr: SocketAddr,
    args: &[&str],
    nofile: Option<(u64, u64)>,
) -> Proc {
    let mut cmd = Command::new(&binaries().bridge);
    cmd.arg("--ring-dir")
        .arg(ring_dir)
        .arg("--mount")
        .arg(mount)
        .arg("--listen")
        .arg(addr.to_string());
    // The rings the tests make are the test's own: trust its user (root is always trusted).
    if !args.contains(&"--ring-owner") {
        cmd.arg("--ring-owner").arg(nix::unistd::geteuid().as_raw().to_string());
    }
    cmd.args(args);
    if let Some((soft, hard)) = nofile {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // setrlimit(2) system call (async-signal-safe; no allocation, no lock).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    soft,
                    hard,
                )
                .map_err(std::io::Error::from)
            });
        }
    }
    let log = ring_dir.join(format!("bridge-{}.log", unique()));
    Proc::spawn("qrng-bridge", cmd, log)
}

impl Bridge {
    /// Starts `qrng-bridge` watching `ring_dir`, mounting at `mount`, with extra `args`; waits
    /// until it answers HTTP.
    pub fn start(ring_dir: &Path, mount: &Path, args: &[&str]) -> Bridge {
        Self::start_with_nofile(ring_dir, mount, args, None)
    }

    /// [`Bridge::start`] with the open-file limit `nofile` (soft, hard), if given.
    pub fn start_with_nofile(
        ring_dir: &Path,
        mount: &Path,
        args: &[&str],
        nofile: Option<(u64, u64)>,
    ) -> Bridge {
        let addr = free_addr();
        let mut proc = spawn_bridge(ring_dir, mount, addr, args, nofile);
        wait_until("bridge answers HTTP", || {
            assert!(!proc.exited(), "qrng-bridge exited at start; log:\n{}", proc.log());
            get(addr, "/health").ok()
        });
        Bridge { proc, addr, mount: mount.to_path_buf() }
    }

    /// Kills the bridge with SIGKILL (a crash): its mount is left dead.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Stops the bridge with SIGTERM; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.proc.terminate()
    }

    /// The device file of `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.mount.join(name)
    }

    /// `GET path` on this bridge.
    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        get(self.addr, path)
    }

    /// `/api/v1/devices` as JSON.
    pub fn devices(&self) -> serde_json::Value {
        let r = self.get("/api/v1/devices").expect("GET /api/v1/devices");
        assert_eq!(r.status, 200, "devices: {}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("devices JSON");
        v["devices"].clone()
    }

    /// The `/api/v1/devices` entry of `name`, if listed.
    pub fn device(&self, name: &str) -> Option<serde_json::Value> {
        self.devices().as_array()?.iter().find(|d| d["name"] == name).cloned()
    }

    /// `n` random bytes over HTTP from `device` (binary format); Err(status) when refused.
    pub fn http_bytes(&self, device: &str, n: usize) -> Result<Vec<u8>, u16> {
        let r = self
            .get(&format!("/api/v1/random/bytes?length={n}&format=binary&device={device}"))
            .map_err(|_| 0u16)?;
        if r.status != 200 {
            return Err(r.status);
        }
        assert_eq!(r.body.len(), n, "binary body of the asked length");
        Ok(r.body)
    }
}

impl Drop for Bridge {
    /// Stops the bridge cleanly, and detaches a mount a killed bridge left behind, so tests leave
    /// no mounts.
    fn drop(&mut self) {
        if !self.proc.exited() {
            let _ = self.proc.terminate();
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let m = self.mount.to_string_lossy();
        if info.lines().any(|l| l.split(' ').nth(4) == Some(&*m)) {
            let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A free loopback address (bound then released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr")
}

/// One `read(2)` call, not a read loop: a device that must fill the whole buffer by itself is
/// checked with this.
pub fn read_once(f: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let got = f.read(&mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

/// Polls `f` until it returns `Some`, failing the test after [`PATIENCE`].
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: HashMap<String, String>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(),
            16,
        )
        .ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Checks that no 8-byte window occurs twice across all `chunks` (at any offset, within and
/// between chunks). Bytes served twice would repeat their windows. For n windows of random data a
/// chance repeat has probability about n²/2⁶⁵ (1e-7 for a million windows).
pub fn assert_no_repeated_windows(chunks: &[Vec<u8>]) {
    let total: usize = chunks.iter().map(|c| c.len().saturating_sub(7)).sum();
    let mut seen = std::collections::HashSet::with_capacity(total);
    for (i, c) in chunks.iter().enumerate() {
        for (off, w) in c.windows(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            assert!(seen.insert(v), "chunk {i} offset {off}: an 8-byte window was served before");
        }
    }
}

/// The first `n` bytes a driver publishes for `spec` (a fixed-seed simulator gives the same
/// stream every run): read straight from a private ring.
pub fn reference_stream(spec: &str, n: usize, dir: &Path) -> Vec<u8> {
    let ring = dir.join("reference.ring");
    let driver = start_driver(spec, &ring);
    let mut c = wait_until("reference ring", || qrng_ring::Consumer::open(&ring).ok());
    // The stream as published, also across a FAILED spell of a faulty simulator.
    c.set_health_gate(false);
    let mut out = vec![0u8; n];
    let mut got = 0;
    let end = Instant::now() + PATIENCE;
    while got < n {
        got += c.read(&mut out[got..]).expect("read reference ring");
        assert!(Instant::now() < end, "reference driver published only {got} of {n} bytes");
        if got < n {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut driver = driver;
    driver.kill();
    out
}

/// Where each served chunk lies in a reference stream.
#[derive(Debug)]
pub struct Placement {
    index: HashMap<u64, usize>,
    reference: Vec<u8>,
}

impl Placement {
    /// Indexes every 8-byte window of `reference` (windows that repeat are dropped from the index).
    pub fn new(reference: Vec<u8>) -> Placement {
        let mut index = HashMap::new();
        let mut dup = std::collections::HashSet::new();
        for (i, w) in reference.windows(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            if index.insert(v, i).is_some() {
                dup.insert(v);
            }
        }
        index.retain(|v, _| !dup.contains(v));
        Placement { index, reference }
    }

    /// Where `chunk` starts in the reference, if it is a contiguous piece of it.
    pub fn locate(&self, chunk: &[u8]) -> Option<usize> {
        let w = u64::from_le_bytes(chunk.get(..8)?.try_into().ok()?);
        let at = *self.index.get(&w)?;
        (self.reference.get(at..at + chunk.len())? == chunk).then_some(at)
    }

    /// Asserts that every chunk is a piece of the reference and that no two overlap: each
    /// published byte went to at most one client.
    pub fn assert_disjoint_pieces(&self, chunks: &[Vec<u8>]) {
        let mut spans: Vec<(usize, usize)> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = self
                    .locate(c)
                    .unwrap_or_else(|| panic!("chunk {i} is not a piece of the reference stream"));
                (at, at + c.len())
            })
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "served twice: {:?} overlaps {:?}", pair[0], pair[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_with_and_without_chunking() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\nhi",
        )
        .expect("parse");
        assert_eq!((r.status, r.body.as_slice()), (503, &b"hi"[..]));
        assert_eq!(r.headers["retry-after"], "1");
        let r = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
            .expect("parse");
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn repeated_windows_and_overlapping_pieces_are_caught() {
        let data: Vec<u8> =
            (0..4096u32).flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes()).collect();
        assert_no_repeated_windows(&[data[..100].to_vec(), data[100..300].to_vec()]);
        let dup = std::panic::catch_unwind(|| {
            assert_no_repeated_windows(&[data[..100].to_vec(), data[90..200].to_vec()])
        });
        assert!(dup.is_err(), "overlap detected");

        let p = Placement::new(data.clone());
        assert_eq!(p.locate(&data[1000..1100]), Some(1000));
        p.assert_disjoint_pieces(&[
            data[0..10].to_vec(),
            data[10..50].to_vec(),
            data[200..300].to_vec(),
        ]);
        let overlap = std::panic::catch_unwind(|| {
            p.assert_disjoint_pieces(&[data[0..20].to_vec(), data[10..50].to_vec()])
        });
        assert!(overlap.is_err(), "overlap detected");
        let mut foreign = data[0..20].to_vec();
        foreign[15] ^= 1;
        assert_eq!(p.locate(&foreign), None);
    }
}
