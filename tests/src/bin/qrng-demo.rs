//! `qrng-demo`: the whole pipeline on a simulated card, with no configuration.
//!
//! Builds `quantis-driver` and `qrng-bridge` (same profile as this binary), starts the driver on a
//! simulated PCIe-16M card publishing into a ring, starts the bridge on that ring with HTTP on
//! 127.0.0.1:8080 and (as root, with /dev/fuse) the FUSE device file, prints what to try, and stops
//! both cleanly on Ctrl-C. Environment overrides: `QRNG_DEMO_DEVICE` (default `sim:pcie-16m`),
//! `QRNG_DEMO_LISTEN` (default `127.0.0.1:8080`), `QRNG_DEMO_DIR` (default `/run/qrng-demo` as
//! root, else a directory under the temp dir).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qrng-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), String> {
    let device = std::env::var("QRNG_DEMO_DEVICE").unwrap_or_else(|_| "sim:pcie-16m".into());
    let listen = std::env::var("QRNG_DEMO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let root = nix::unistd::geteuid().is_root();
    let dir = std::env::var_os("QRNG_DEMO_DIR").map(PathBuf::from).unwrap_or_else(|| {
        if root {
            PathBuf::from("/run/qrng-demo")
        } else {
            std::env::temp_dir().join(format!("qrng-demo-{}", nix::unistd::geteuid()))
        }
    });
    let bin = build()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ring = dir.join("qrng0.ring");
    let mount = dir.join("dev");
    let fuse = root && Path::new("/dev/fuse").exists();

    install_signal_handlers()?;
    println!(
        "qrng-demo: starting quantis-driver on {device} (SIMULATED card) -> {}",
        ring.display()
    );
    let mut driver = Command::new(bin.join("quantis-driver"))
        .args(["--device", &device, "--ring"])
        .arg(&ring)
        .spawn()
        .map_err(|e| format!("cannot start quantis-driver: {e}"))?;
    let result = (|| {
        wait_for(
            || ring.exists(),
            Duration::from_secs(20),
            "the ring file to appear",
            &mut [&mut driver],
        )?;
        let mut bridge_cmd = Command::new(bin.join("qrng-bridge"));
        // The bridge watches the demo directory (hot-plug), not the system's /run/qrng.
        bridge_cmd
            .arg("--ring-dir")
            .arg(&dir)
            .args(["--listen", &listen])
            .arg("--mount")
            .arg(&mount)
            // The demo's rings are its own user's: trust that user (root is always trusted).
            .arg("--ring-owner")
            .arg(nix::unistd::geteuid().as_raw().to_string());
        if !fuse {
            bridge_cmd.arg("--no-fuse");
            println!("qrng-demo: not root or no /dev/fuse: serving HTTP only (run as root for the FUSE file)");
        }
        println!("qrng-demo: starting qrng-bridge on {listen}");
        let mut bridge =
            bridge_cmd.spawn().map_err(|e| format!("cannot start qrng-bridge: {e}"))?;
        let r = (|| {
            wait_for(
                || http_ok(&listen),
                Duration::from_secs(20),
                "the bridge to answer /health",
                &mut [&mut driver, &mut bridge],
            )?;
            println!();
            println!("The pipeline is up (everything it serves is labelled \"simulated\"). Try:");
            println!("  curl -s 'http://{listen}/api/v1/random/bytes?length=32&format=hex'");
            println!("  curl -s 'http://{listen}/api/v1/random/integers?min=1&max=6&count=10'");
            println!("  curl -s 'http://{listen}/health'");
            println!("  curl -s 'http://{listen}/metrics' | head");
            if fuse {
                println!("  head -c 32 {}/qrng0 | xxd", mount.display());
                println!("  dd if={}/qrng0 of=/dev/null bs=1M count=64", mount.display());
            }
            println!("Press Ctrl-C to stop.");
            while !STOP.load(Ordering::Relaxed) {
                for (name, child) in [("quantis-driver", &mut driver), ("qrng-bridge", &mut bridge)]
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("{name} exited unexpectedly ({status})"));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            println!("\nqrng-demo: stopping");
            Ok(())
        })();
        stop(&mut bridge, "qrng-bridge");
        r
    })();
    stop(&mut driver, "quantis-driver");
    result
}

/// Builds both binaries in this binary's profile and returns the directory holding them.
fn build() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory for the current executable")?.to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "quantis-driver", "-p", "qrng-bridge"]);
    if release {
        cmd.arg("--release");
    }
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let status = cmd.status().map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    Ok(dir)
}

fn wait_for(
    mut ready: impl FnMut() -> bool,
    limit: Duration,
    what: &str,
    children: &mut [&mut Child],
) -> Result<(), String> {
    let start = Instant::now();
    while !ready() {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("a process exited ({status}) while waiting for {what}"));
            }
        }
        if STOP.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn http_ok(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// SIGTERM, then SIGKILL after 5 s.
fn stop(child: &mut Child, name: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("qrng-demo: {name} did not stop within 5 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn install_signal_handlers() -> Result<(), String> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action =
        SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to a static atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    Ok(())
}
