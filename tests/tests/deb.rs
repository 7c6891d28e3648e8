//! The Debian package, built by the real cargo-deb and installed, checked, removed and purged by
//! the real dpkg, without touching the host: dpkg runs chrooted into an overlay of `/` (upper layer
//! on a tmpfs) inside a private mount namespace, with its own /dev, /run and /tmp. There is no
//! systemd as PID 1 and no udevd there, which is also what the maintainer scripts must tolerate.
//! The installed units are checked again with `systemd-analyze verify` and `security` in place.
//! The package is then upgraded to a later version of itself, removed and purged; and Debian's own
//! checker, lintian, must report no error and no warning on it.

use qrng_e2e::packaging::{
    build_deb, build_deb_version, missing_prerequisites, output_text, parse_exposure,
    run_in_mount_namespace, skip,
};
use std::fs;
use std::path::Path;
use std::process::Command;

const PACKAGE: &str = "quantis-qrng";

/// The version the upgrade test moves to (the package's own is 0.1.0-1).
const NEXT_VERSION: &str = "0.1.1-1";

/// Every file the package must install, with its mode.
const FILES: &[(&str, &str)] = &[
    ("/usr/bin/quantis-driver", "755"),
    ("/usr/bin/qrng-bridge", "755"),
    ("/usr/bin/qrng-feeder", "755"),
    ("/usr/libexec/quantis-qrng/quantis-vfio", "755"),
    ("/usr/lib/udev/rules.d/70-quantis-qrng.rules", "644"),
    ("/usr/lib/systemd/system/quantis-driver@.service", "644"),
    ("/usr/lib/systemd/system/qrng-bridge.service", "644"),
    ("/usr/lib/systemd/system/qrng-feeder.service", "644"),
    ("/usr/lib/sysusers.d/quantis-qrng.conf", "644"),
    ("/usr/lib/tmpfiles.d/quantis-qrng.conf", "644"),
    ("/usr/share/doc/quantis-qrng/deployment.md", "644"),
    ("/usr/share/doc/quantis-qrng/feeder.md", "644"),
    ("/usr/share/doc/quantis-qrng/egd.md", "644"),
    ("/usr/share/doc/quantis-qrng/changelog.Debian.gz", "644"),
    ("/usr/share/doc/quantis-qrng/examples/prometheus/qrng.rules.yml", "644"),
    ("/usr/share/doc/quantis-qrng/examples/grafana/qrng.json", "644"),
    ("/usr/share/lintian/overrides/quantis-qrng", "644"),
    ("/usr/share/man/man8/quantis-driver.8.gz", "644"),
    ("/usr/share/man/man8/quantis-driver-probe.8.gz", "644"),
    ("/usr/share/man/man8/quantis-driver-list.8.gz", "644"),
    ("/usr/share/man/man8/quantis-driver-assess.8.gz", "644"),
    ("/usr/share/man/man8/quantis-driver-make-matrix.8.gz", "644"),
    ("/usr/share/man/man8/qrng-bridge.8.gz", "644"),
    ("/usr/share/man/man8/qrng-feeder.8.gz", "644"),
    ("/usr/share/man/man7/qrng.7.gz", "644"),
    ("/usr/share/bash-completion/completions/quantis-driver", "644"),
    ("/usr/share/bash-completion/completions/qrng-bridge", "644"),
    ("/usr/share/bash-completion/completions/qrng-feeder", "644"),
    ("/usr/share/zsh/vendor-completions/_quantis-driver", "644"),
    ("/usr/share/zsh/vendor-completions/_qrng-bridge", "644"),
    ("/usr/share/zsh/vendor-completions/_qrng-feeder", "644"),
    ("/usr/share/fish/vendor_completions.d/quantis-driver.fish", "644"),
    ("/usr/share/fish/vendor_completions.d/qrng-bridge.fish", "644"),
    ("/usr/share/fish/vendor_completions.d/qrng-feeder.fish", "644"),
];

/// Directories and links the package makes at run time, observed along with [`FILES`].
const RUNTIME: [&str; 6] = [
    "/run/qrng",
    "/run/qrng/dev",
    "/run/qrng/cards",
    "/var/lib/qrng",
    "/dev/qrng0",
    "/etc/systemd/system/multi-user.target.wants/qrng-bridge.service",
];

/// The shell run in the namespace: overlay root, chroot, install, inspect, upgrade, remove, purge.
/// Every observation goes to a file in /out for the assertions below; /out/paths lists the paths
/// whose owner, group, mode and type are recorded.
const SCRIPT: &str = r#"
B="$WORK/ns"
mkdir -p "$B"
mount -t tmpfs tmpfs "$B"
mkdir -p "$B/up" "$B/work" "$B/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/up,workdir=$B/work" "$B/root"
R="$B/root"
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/urandom" c 1 9
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
mount -t tmpfs tmpfs "$R/sys"
mkdir -p "$R/out"
mount --bind "$WORK/out" "$R/out"
cp "$DEB" "$R/tmp/pkg.deb"
cp "$DEB2" "$R/tmp/pkg2.deb"
chroot "$R" /bin/sh -c '
facts() {
    while read -r p; do
        if [ -e "$p" ] || [ -L "$p" ]; then stat -c "%n %U %G %a %F" "$p"; fi
    done </out/paths
}
dpkg -i /tmp/pkg.deb >/out/install.log 2>&1; echo $? >/out/install.rc
facts >/out/installed
getent passwd qrng >/out/passwd || true
readlink /dev/qrng0 >/out/qrng0 || true
systemd-analyze verify /usr/lib/systemd/system/quantis-driver@.service \
    /usr/lib/systemd/system/qrng-bridge.service /usr/lib/systemd/system/qrng-feeder.service \
    >/out/verify.log 2>&1; echo $? >/out/verify.rc
systemd-analyze security --offline=true quantis-driver@.service >/out/security-driver.log 2>&1 || true
systemd-analyze security --offline=true qrng-bridge.service >/out/security-bridge.log 2>&1 || true
systemd-analyze security --offline=true qrng-feeder.service >/out/security-feeder.log 2>&1 || true
echo "extractor seed" >/var/lib/qrng/upgrade-marker
echo "unread ring bytes" >/run/qrng/upgrade-marker.ring
dpkg -i /tmp/pkg2.deb >/out/upgrade.log 2>&1; echo $? >/out/upgrade.rc
facts >/out/upgraded
dpkg-query -W -f="\${Version}" quantis-qrng >/out/upgraded.version 2>&1 || true
cat /var/lib/qrng/upgrade-marker /run/qrng/upgrade-marker.ring >/out/markers 2>&1 || true
readlink /dev/qrng0 >/out/qrng0.upgraded || true
dpkg -r quantis-qrng >/out/remove.log 2>&1; echo $? >/out/remove.rc
facts >/out/removed
dpkg -P quantis-qrng >/out/purge.log 2>&1; echo $? >/out/purge.rc
facts >/out/purged
dpkg-query -W -f="\${Status}" quantis-qrng >/out/status 2>&1 || true
'
"#;

fn read(out: &Path, name: &str) -> String {
    fs::read_to_string(out.join(name)).unwrap_or_default()
}

/// The `stat` lines of a facts file, keyed by path.
fn facts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, rest)| (p.to_owned(), rest.to_owned()))
        .collect()
}

fn fact<'a>(facts: &'a [(String, String)], path: &str) -> Option<&'a str> {
    facts.iter().find(|(p, _)| p == path).map(|(_, r)| r.as_str())
}

#[test]
fn deb_package_installs_verifies_removes_and_purges_cleanly() {
    let test = "deb_package_installs_verifies_removes_and_purges_cleanly";
    if let Some(reason) = missing_prerequisites(
        &["cargo-deb", "dpkg", "dpkg-deb", "unshare", "chroot", "systemd-analyze"],
        true,
    ) {
        return skip(test, &reason);
    }
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(&work.path().join("deb")).expect("build the package");
    let deb2 = build_deb_version(&work.path().join("deb2"), Some(NEXT_VERSION))
        .expect("build the later package");

    // The archive itself: contents with modes, dependencies, maintainer scripts.
    let listing = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for &(path, mode) in FILES {
        let want = if mode == "755" { "-rwxr-xr-x 0/0 " } else { "-rw-r--r-- 0/0 " };
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .unwrap_or_else(|| panic!("{path} missing from the package:\n{listing}"));
        assert!(line.starts_with(want), "{path}: {line}");
    }
    let field = |name: &str| {
        let out = Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), PACKAGE);
    let depends = field("Depends");
    for dep in ["systemd", "udev", "init-system-helpers"] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    let control = Command::new("dpkg-deb").arg("--info").arg(&deb).output().unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    for script in ["postinst", "prerm", "postrm"] {
        assert!(control.contains(script), "no {script} in the package:\n{control}");
    }

    // Install, inspect, remove, purge inside the throw-away root.
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let paths: Vec<&str> = FILES.iter().map(|(p, _)| *p).chain(RUNTIME).collect();
    fs::write(out.join("paths"), paths.join("\n") + "\n").unwrap();
    let run = run_in_mount_namespace(
        SCRIPT,
        &[
            ("WORK", &work.path().display().to_string()),
            ("DEB", &deb.display().to_string()),
            ("DEB2", &deb2.display().to_string()),
        ],
    )
    .unwrap();
    let (stdout, stderr) = output_text(&run);
    assert!(run.status.success(), "namespace script failed:\n{stdout}\n{stderr}");

    assert_eq!(
        read(&out, "install.rc").trim(),
        "0",
        "dpkg -i failed:\n{}",
        read(&out, "install.log")
    );
    let installed = facts(&read(&out, "installed"));
    for &(path, mode) in FILES {
        let got = fact(&installed, path).unwrap_or_else(|| panic!("{path} not installed"));
        assert!(got.starts_with(&format!("root root {mode} ")), "{path}: {got}");
    }
    let passwd = read(&out, "passwd");
    assert!(
        passwd.starts_with("qrng:x:")
            && passwd.trim_end().ends_with(":/var/lib/qrng:/usr/sbin/nologin"),
        "systemd-sysusers did not create the qrng user: {passwd:?}\n{}",
        read(&out, "install.log")
    );
    assert_eq!(fact(&installed, "/run/qrng"), Some("qrng qrng 755 directory"));
    assert_eq!(fact(&installed, "/run/qrng/dev"), Some("qrng qrng 755 directory"));
    assert_eq!(fact(&installed, "/run/qrng/cards"), Some("qrng qrng 755 directory"));
    assert_eq!(fact(&installed, "/var/lib/qrng"), Some("qrng qrng 750 directory"));
    assert_eq!(read(&out, "qrng0").trim(), "/run/qrng/dev/qrng0");
    assert!(
        fact(&installed, "/etc/systemd/system/multi-user.target.wants/qrng-bridge.service")
            .is_some(),
        "the bridge was not enabled"
    );

    // The units as installed.
    let verify = read(&out, "verify.log");
    assert_eq!(read(&out, "verify.rc").trim(), "0", "systemd-analyze verify failed:\n{verify}");
    assert!(
        !verify.lines().any(|l| l.contains("quantis") || l.contains("qrng")),
        "systemd-analyze verify reports:\n{verify}"
    );
    for log in ["security-driver.log", "security-bridge.log", "security-feeder.log"] {
        let text = read(&out, log);
        let level =
            parse_exposure(&text).unwrap_or_else(|| panic!("no exposure in {log}:\n{text}"));
        assert!(level <= 4.0, "{log}: exposure {level}");
    }

    // Upgrade to a later version: the same files, the user's state and a ring's unread bytes kept,
    // the link and the enablement still there.
    assert_eq!(
        read(&out, "upgrade.rc").trim(),
        "0",
        "dpkg -i of {NEXT_VERSION} over the installed package failed:\n{}",
        read(&out, "upgrade.log")
    );
    assert_eq!(read(&out, "upgraded.version"), NEXT_VERSION);
    let upgraded = facts(&read(&out, "upgraded"));
    for path in &paths {
        assert_eq!(
            fact(&upgraded, path),
            fact(&installed, path),
            "{path} differs after the upgrade:\n{}",
            read(&out, "upgrade.log")
        );
    }
    assert_eq!(read(&out, "markers"), "extractor seed\nunread ring bytes\n");
    assert_eq!(read(&out, "qrng0.upgraded").trim(), "/run/qrng/dev/qrng0");

    // Removal: files, the /dev link and the enablement go; state stays until purge.
    assert_eq!(
        read(&out, "remove.rc").trim(),
        "0",
        "dpkg -r failed:\n{}",
        read(&out, "remove.log")
    );
    let removed = facts(&read(&out, "removed"));
    for &(path, _) in FILES {
        assert_eq!(fact(&removed, path), None, "{path} left after dpkg -r");
    }
    assert_eq!(fact(&removed, "/dev/qrng0"), None, "/dev/qrng0 left after dpkg -r");
    assert!(fact(&removed, "/var/lib/qrng").is_some(), "state removed before purge");

    assert_eq!(read(&out, "purge.rc").trim(), "0", "dpkg -P failed:\n{}", read(&out, "purge.log"));
    let purged = read(&out, "purged");
    assert_eq!(purged, "", "left after purge:\n{purged}");
    let status = read(&out, "status");
    assert!(
        !status.contains("installed") || status.contains("not-installed"),
        "dpkg status after purge: {status}"
    );
}

/// Debian's checker on the package as built: no error and no warning (Debian 12's lintian, default
/// profile). Overrides live in the package with their reasons; that lintian read them shows it
/// examined this package.
#[test]
fn deb_package_is_lintian_clean() {
    let test = "deb_package_is_lintian_clean";
    if let Some(reason) = missing_prerequisites(&["cargo-deb", "lintian"], false) {
        return skip(test, &reason);
    }
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(work.path()).expect("build the package");
    let run = Command::new("lintian").arg("--show-overrides").arg(&deb).output().unwrap();
    let (stdout, stderr) = output_text(&run);
    let problems: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("E: ") || l.starts_with("W: ")).collect();
    assert!(problems.is_empty(), "lintian reports:\n{}\n{stderr}", problems.join("\n"));
    assert!(
        stdout.contains("O: quantis-qrng: initial-upload-closes-no-bugs"),
        "lintian did not examine the package:\n{stdout}\n{stderr}"
    );
    // Exit status 0: no error-level tag (lintian's default --fail-on is error).
    assert!(run.status.success(), "lintian failed:\n{stdout}\n{stderr}");
}
