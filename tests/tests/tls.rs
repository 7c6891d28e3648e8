//! HTTPS, several listeners and HTTP/2 end to end: the real `qrng-bridge` with certificates made
//! at test time (rcgen; RSA keys by `openssl genpkey`, as ring cannot generate RSA keys), spoken
//! to by curl and nghttp (docs/api.md "Listeners, TLS and HTTP/2").

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use qrng_e2e::{binaries, free_addr, start_driver, wait_until, Proc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// Whether the client tools are here; without them the test prints why and passes, except under
/// `QRNG_REQUIRE_TOOLS=1` (CI), where it fails.
fn tools(test: &str, names: &[&str]) -> bool {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| Command::new(n).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("QRNG_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
        "{test}: {missing:?} not installed"
    );
    eprintln!("skipping {test}: {missing:?} not installed");
    false
}

#[derive(Clone, Copy, Debug)]
enum Alg {
    Rsa,
    Ecdsa,
    Ed25519,
}

fn key(alg: Alg, dir: &Path) -> KeyPair {
    match alg {
        Alg::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ecdsa key"),
        Alg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key"),
        Alg::Rsa => {
            let path = dir.join("rsa-gen.pem");
            let out = Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&path)
                .output()
                .expect("openssl genpkey");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let pem = std::fs::read_to_string(&path).expect("rsa key");
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("rsa key pair")
        }
    }
}

/// A certificate authority: its certificate in `DIR/NAME.pem`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    ca_with(dir, name, &rcgen::PKCS_ECDSA_P256_SHA256)
}

fn ca_with(dir: &Path, name: &str, alg: &'static rcgen::SignatureAlgorithm) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate_for(alg).expect("ca key");
    let cert = params.self_signed(&key).expect("ca cert");
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).expect("write ca");
    Ca { issuer: Issuer::new(params, key), pem }
}

/// A leaf certificate for `localhost` named `cn`, signed by `ca`: (chain PEM: leaf then CA, key
/// PEM).
fn leaf(ca: &Ca, alg: Alg, cn: &str, client: bool, dir: &Path) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    // Serial numbers of one size (rcgen's are random, of varying DER length).
    params.serial_number = Some(rcgen::SerialNumber::from(vec![0x10, 0, 0, unique() as u8]));
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = key(alg, dir);
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    let ca_pem = std::fs::read_to_string(&ca.pem).expect("ca pem");
    (format!("{}{ca_pem}", cert.pem()), key.serialize_pem())
}

/// Writes a pair to `cert` and `key`.
fn write_pair(pair: &(String, String), cert: &Path, key: &Path) {
    std::fs::write(cert, &pair.0).expect("write cert");
    std::fs::write(key, &pair.1).expect("write key");
}

/// Replaces `path` the way certbot and ACME clients do: a new file renamed over it.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Starts the bridge with `args`, no FUSE, and serving the rings of `ring_dir` if given (else
/// none); does not wait for it.
fn bridge(dir: &Path, args: &[&str], ring_dir: Option<&Path>) -> Proc {
    let mut cmd = Command::new(&binaries().bridge);
    cmd.args(["--no-fuse", "--http-threads", "1"])
        .arg("--ring-owner")
        .arg(nix::unistd::geteuid().as_raw().to_string())
        .args(args);
    match ring_dir {
        Some(d) => cmd.arg("--ring-dir").arg(d),
        None => cmd.arg("--no-watch"),
    };
    Proc::spawn("qrng-bridge", cmd, dir.join(format!("bridge-{}.log", unique())))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "--connect-timeout", "5"])
        .args(args)
        .output()
        .expect("run curl")
}

/// `https://localhost:PORT{path}` with `localhost` pointed at `addr`, trusting `ca`; the body,
/// then a line with the HTTP status and one with the HTTP version.
fn https(addr: SocketAddr, ca: &Path, path: &str, extra: &[&str]) -> Output {
    let port = addr.port();
    let resolve = format!("localhost:{port}:{}", addr.ip());
    let url = format!("https://localhost:{port}{path}");
    let ca = ca.to_str().expect("utf-8 path");
    let mut args =
        vec!["--resolve", &resolve, "--cacert", ca, "-w", "\n%{http_code}\n%{http_version}"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// Status and HTTP version from [`https`]'s or [`plain`]'s output, if curl got an answer.
fn answer(out: &Output) -> Option<(u16, String)> {
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.rsplit('\n');
    let version = lines.next()?.to_owned();
    let status = lines.next()?.parse().ok()?;
    Some((status, version))
}

fn plain(addr: SocketAddr, path: &str, extra: &[&str]) -> Output {
    let url = format!("http://{addr}{path}");
    let mut args = vec!["-w", "\n%{http_code}\n%{http_version}"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// Waits until the bridge answers `/health` over HTTPS on `addr`.
fn wait_https(p: &mut Proc, addr: SocketAddr, ca: &Path, extra: &[&str]) {
    wait_until("bridge answers HTTPS", || {
        assert!(!p.exited(), "qrng-bridge exited at start; log:\n{}", p.log());
        answer(&https(addr, ca, "/health", extra)).map(|_| ())
    });
}

/// The subject of the certificate a new connection to `addr` is served (curl -v).
fn served_subject(addr: SocketAddr, ca: &Path) -> String {
    let out = https(addr, ca, "/health", &["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split_once("subject: ").map(|(_, s)| s.trim().to_owned()))
        .unwrap_or_else(|| panic!("no subject in curl -v:\n{err}"))
}

/// What the server sends back to a plain HTTP request on `addr`, until it closes (or 10 s).
fn raw_answer(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn e2e_https_serves_rsa_ecdsa_and_ed25519_keys_with_their_chain_and_never_plain_http() {
    if !tools("https", &["curl", "openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ca = ca(dir, "test-ca");
    for alg in [Alg::Rsa, Alg::Ecdsa, Alg::Ed25519] {
        let (cert, key) = (dir.join(format!("{alg:?}.crt")), dir.join(format!("{alg:?}.key")));
        write_pair(&leaf(&ca, alg, &format!("server-{alg:?}"), false, dir), &cert, &key);
        let addr = free_addr();
        let listen = format!("https://{addr}");
        let mut p = bridge(
            dir,
            &[
                "--listen",
                &listen,
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            None,
        );
        wait_https(&mut p, addr, &ca.pem, &[]);
        // The chain in the file lets a client that trusts only the CA verify the server.
        let h2 = answer(&https(addr, &ca.pem, "/health", &[])).expect("https");
        assert_eq!(h2.1, "2", "{alg:?}: ALPN h2 by default");
        let h1 = answer(&https(addr, &ca.pem, "/health", &["--http1.1"])).expect("https/1.1");
        assert_eq!(h1.1, "1.1", "{alg:?}");
        for tls in ["--tlsv1.2", "--tlsv1.3"] {
            let max = if tls == "--tlsv1.2" { "1.2" } else { "1.3" };
            let r = answer(&https(addr, &ca.pem, "/health", &[tls, "--tls-max", max]));
            assert!(r.is_some(), "{alg:?} over TLS {max}");
        }
        if matches!(alg, Alg::Ecdsa) {
            // Plain HTTP on the TLS port gets no HTTP answer.
            let got = raw_answer(addr);
            assert!(!got.starts_with(b"HTTP/"), "plain HTTP answered: {got:?}");
        }
        assert!(p.terminate(), "clean exit; log:\n{}", p.log());
    }
}

#[test]
fn e2e_the_certificate_is_reloaded_on_sighup_and_on_replace_and_a_bad_pair_keeps_the_old() {
    if !tools("reload", &["curl"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Ed25519 keys and CA: signatures of one size, so a certificate of another name of the same
    // length has the same file size.
    let ca = ca_with(dir, "test-ca", &rcgen::PKCS_ED25519);
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_pair(&leaf(&ca, Alg::Ed25519, "gen-1", false, dir), &cert, &key);
    let addr = free_addr();
    let listen = format!("https://{addr}");
    let mut p = bridge(
        dir,
        &[
            "--listen",
            &listen,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        None,
    );
    wait_https(&mut p, addr, &ca.pem, &[]);
    assert!(served_subject(addr, &ca.pem).contains("gen-1"));

    // SIGHUP: the files rewritten in place with their size, inode and mtime kept, so only the
    // signal can tell the server.
    let gen2 = leaf(&ca, Alg::Ed25519, "gen-2", false, dir);
    assert_eq!(gen2.0.len(), std::fs::read(&cert).expect("cert").len(), "same size");
    for (path, content) in [(&cert, &gen2.0), (&key, &gen2.1)] {
        let mtime = std::fs::metadata(path).expect("meta").modified().expect("mtime");
        let f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
        (&f).write_all(content.as_bytes()).expect("rewrite");
        f.set_modified(mtime).expect("keep mtime");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        served_subject(addr, &ca.pem).contains("gen-1"),
        "no reload without a change or signal"
    );
    nix::sys::signal::kill(p.pid(), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_until("SIGHUP reload", || served_subject(addr, &ca.pem).contains("gen-2").then_some(()));

    // Replaced by rename (certbot, ACME clients): seen without a signal.
    let gen3 = leaf(&ca, Alg::Ecdsa, "gen-3", false, dir);
    replace(&key, &gen3.1);
    replace(&cert, &gen3.0);
    wait_until("reload on replace", || {
        served_subject(addr, &ca.pem).contains("gen-3").then_some(())
    });

    // A key that does not belong to the certificate: the old pair stays, the log says why and
    // holds no key material.
    let other = leaf(&ca, Alg::Ecdsa, "gen-4", false, dir);
    replace(&key, &other.1);
    wait_until("failed reload logged", || p.log().contains("not reloaded").then_some(()));
    assert!(served_subject(addr, &ca.pem).contains("gen-3"), "old pair kept");
    let log = p.log();
    assert!(log.contains("does not belong to the certificate"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    let body: String = other.1.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!log.contains(&body[..20]), "key material in the log");
    assert!(p.terminate(), "clean exit; log:\n{}", p.log());
}

#[test]
fn e2e_mutual_tls_answers_only_clients_of_the_client_ca_and_tokens_still_apply() {
    if !tools("mtls", &["curl"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server_ca = ca(dir, "server-ca");
    let client_ca = ca(dir, "client-ca");
    let other_ca = ca(dir, "other-ca");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_pair(&leaf(&server_ca, Alg::Ecdsa, "server", false, dir), &cert, &key);
    let (good_c, good_k) = (dir.join("good.crt"), dir.join("good.key"));
    write_pair(&leaf(&client_ca, Alg::Ecdsa, "good-client", true, dir), &good_c, &good_k);
    let (bad_c, bad_k) = (dir.join("bad.crt"), dir.join("bad.key"));
    write_pair(&leaf(&other_ca, Alg::Ecdsa, "bad-client", true, dir), &bad_c, &bad_k);
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "s3cret-token\n").expect("tokens");
    let addr = free_addr();
    let listen = format!("https://{addr}");
    let mut p = bridge(
        dir,
        &[
            "--listen",
            &listen,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            client_ca.pem.to_str().unwrap(),
            "--tokens-file",
            tokens.to_str().unwrap(),
        ],
        None,
    );
    let good = ["--cert", good_c.to_str().unwrap(), "--key", good_k.to_str().unwrap()];
    wait_https(&mut p, addr, &server_ca.pem, &good);
    let devices = "/api/v1/devices";
    assert_eq!(answer(&https(addr, &server_ca.pem, devices, &[])), None, "no client certificate");
    let bad = ["--cert", bad_c.to_str().unwrap(), "--key", bad_k.to_str().unwrap()];
    assert_eq!(
        answer(&https(addr, &server_ca.pem, devices, &bad)),
        None,
        "a certificate of another CA"
    );
    let r = answer(&https(addr, &server_ca.pem, devices, &good)).expect("answered");
    assert_eq!(r.0, 401, "the right certificate, no token");
    let mut with_token = good.to_vec();
    with_token.extend(["-H", "Authorization: Bearer s3cret-token"]);
    let r = answer(&https(addr, &server_ca.pem, devices, &with_token)).expect("answered");
    assert_eq!(r.0, 200, "the right certificate and token");
    assert!(p.terminate(), "clean exit; log:\n{}", p.log());
}

#[test]
fn e2e_listeners_have_their_own_schemes_and_a_unix_socket_its_mode() {
    if !tools("listeners", &["curl"]) {
        return;
    }
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ca = ca(dir, "test-ca");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_pair(&leaf(&ca, Alg::Ecdsa, "server", false, dir), &cert, &key);
    let (tls_addr, plain_addr) = (free_addr(), free_addr());
    let sock = dir.join("http.sock");
    // A socket file left by a server that is gone: removed at start.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("stale socket"));
    let (l1, l2, l3) = (
        format!("https://{tls_addr}"),
        format!("http://{plain_addr}"),
        format!("unix:{}", sock.display()),
    );
    let mut p = bridge(
        dir,
        &[
            "--listen",
            &l1,
            "--listen",
            &l2,
            "--listen",
            &l3,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--unix-socket-mode",
            "600",
            // Only the TLS handshake timeout can close an idle TLS connection below.
            "--tls-handshake-timeout-ms",
            "300",
            "--http-header-timeout-ms",
            "600000",
            "--http-idle-timeout-ms",
            "600000",
        ],
        None,
    );
    wait_https(&mut p, tls_addr, &ca.pem, &[]);
    assert_eq!(answer(&plain(plain_addr, "/health", &[])).map(|a| a.1), Some("1.1".into()));
    assert!(!raw_answer(tls_addr).starts_with(b"HTTP/"), "plain HTTP on the HTTPS listener");
    let plain_as_tls = https(plain_addr, &ca.pem, "/health", &[]);
    assert_eq!(answer(&plain_as_tls), None, "TLS on the plain listener");
    let meta = std::fs::symlink_metadata(&sock).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let out = curl(&[
        "--unix-socket",
        sock.to_str().unwrap(),
        "-w",
        "\n%{http_code}\n%{http_version}",
        "http://localhost/health",
    ]);
    assert_eq!(answer(&out).map(|a| a.1), Some("1.1".into()), "{out:?}");
    // A TLS handshake that never starts is closed by the handshake timeout.
    let mut idle = TcpStream::connect(tls_addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    assert_eq!(idle.read(&mut [0u8; 16]).expect("closed by the server, not timed out"), 0);
    assert!(p.terminate(), "clean exit; log:\n{}", p.log());
}

#[test]
fn e2e_start_up_refuses_bad_tls_files_and_listeners_naming_them_and_binds_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ca = ca(dir, "test-ca");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_pair(&leaf(&ca, Alg::Ecdsa, "server", false, dir), &cert, &key);
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, leaf(&ca, Alg::Ecdsa, "other", false, dir).1).expect("write");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let missing = dir.join("missing.pem");
    let not_socket = dir.join("not-a-socket");
    std::fs::write(&not_socket, "keep me").expect("write");
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--tls-cert".into(), s(&missing), "--tls-key".into(), s(&key)], s(&missing)),
        (vec!["--tls-cert".into(), s(&empty), "--tls-key".into(), s(&key)], s(&empty)),
        (vec!["--tls-cert".into(), s(&cert), "--tls-key".into(), s(&garbage)], s(&garbage)),
        (vec!["--tls-cert".into(), s(&cert), "--tls-key".into(), s(&other_key)], s(&other_key)),
        (
            vec![
                "--tls-cert".into(),
                s(&cert),
                "--tls-key".into(),
                s(&key),
                "--tls-client-ca".into(),
                s(&empty),
            ],
            s(&empty),
        ),
        (vec!["--listen".into(), format!("unix:{}", s(&not_socket))], s(&not_socket)),
    ];
    for (args, named) in cases {
        let addr = free_addr();
        let mut all = vec!["--listen".to_owned(), format!("{addr}")];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut p = bridge(dir, &all, None);
        let status = p.wait_exit();
        let log = p.log();
        assert!(!status.success(), "{all:?} started; log:\n{log}");
        assert!(log.contains(&named), "{all:?}: the error does not name {named}:\n{log}");
        assert!(!log.contains("serving HTTP"), "{all:?}: served:\n{log}");
    }
    assert_eq!(std::fs::read_to_string(&not_socket).expect("kept"), "keep me");
}

/// N answers of 32 random bytes as hex, asked for as N concurrent streams of one HTTP/2
/// connection (nghttp speaks HTTP/2 only: with prior knowledge for http://, by ALPN for
/// https://; curl 7.88 fails multiplexed `--parallel` transfers).
fn h2_answers(url: &str, n: usize) -> Vec<String> {
    let out = Command::new("nghttp")
        .args(["-t", "20", "-m", &n.to_string()])
        .arg(format!("{url}/api/v1/random/bytes?format=hex&length=32"))
        .output()
        .expect("run nghttp");
    assert!(out.status.success(), "{out:?}");
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<serde_json::Value>()
        .map(|v| v.expect("JSON answer")["data"].as_str().expect("data").to_owned())
        .collect()
}

#[test]
fn e2e_http2_over_tls_and_with_prior_knowledge_answers_each_stream_once() {
    if !tools("http2", &["curl", "nghttp"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ring = dir.join("qrng0.ring");
    let _driver = start_driver("sim:pcie-4m?seed=1", &ring);
    let ca = ca(dir, "test-ca");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_pair(&leaf(&ca, Alg::Ecdsa, "server", false, dir), &cert, &key);
    let (tls_addr, plain_addr) = (free_addr(), free_addr());
    let (l1, l2) = (format!("https://{tls_addr}"), format!("http://{plain_addr}"));
    let mut p = bridge(
        dir,
        &[
            "--listen",
            &l1,
            "--listen",
            &l2,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        Some(dir),
    );
    wait_until("random bytes served", || {
        assert!(!p.exited(), "qrng-bridge exited at start; log:\n{}", p.log());
        let r = answer(&plain(plain_addr, "/api/v1/random/bytes?length=1", &[]))?;
        (r.0 == 200).then_some(())
    });
    let n = 50;
    let over_tls = h2_answers(&format!("https://localhost:{}", tls_addr.port()), n);
    let cleartext = h2_answers(&format!("http://{plain_addr}"), n);
    assert_eq!((over_tls.len(), cleartext.len()), (n, n));
    let mut seen = std::collections::HashSet::new();
    for data in over_tls.iter().chain(&cleartext) {
        assert_eq!(data.len(), 64);
        assert!(seen.insert(data.clone()), "an answer repeated: {data}");
    }
    // Binary answers large enough to be lent on plain HTTP/1.1 are copied whole over TLS and
    // HTTP/2.
    let big = "/api/v1/random/bytes?length=65536&format=binary";
    let file = dir.join("big.bin");
    let f = file.to_str().expect("utf-8");
    for extra in [&["--http1.1", "-o", f][..], &["--http2", "-o", f]] {
        assert_eq!(answer(&https(tls_addr, &ca.pem, big, extra)).map(|a| a.0), Some(200));
        assert_eq!(std::fs::metadata(&file).expect("body").len(), 65536, "{extra:?}");
    }
    let h2c = answer(&plain(plain_addr, big, &["--http2-prior-knowledge", "-o", f]));
    assert_eq!(h2c, Some((200, "2".into())));
    assert_eq!(std::fs::metadata(&file).expect("body").len(), 65536);
    // curl gets HTTP/2 by ALPN, and with prior knowledge.
    let resolve = ["--http2"];
    assert_eq!(
        answer(&https(tls_addr, &ca.pem, "/health", &resolve)).map(|a| a.1),
        Some("2".into())
    );
    let h2c = answer(&plain(plain_addr, "/health", &["--http2-prior-knowledge"]));
    assert_eq!(h2c.map(|a| a.1), Some("2".into()));
    assert!(p.terminate(), "clean exit; log:\n{}", p.log());

    // The stream cap is advertised in the server's SETTINGS.
    let addr = free_addr();
    let mut p = bridge(dir, &["--listen", &addr.to_string(), "--http2-max-streams", "7"], None);
    let out = wait_until("nghttp answered", || {
        assert!(!p.exited(), "qrng-bridge exited at start; log:\n{}", p.log());
        let out = Command::new("nghttp")
            .args(["-nv", "-t", "20"])
            .arg(format!("http://{addr}/health"))
            .output()
            .expect("nghttp");
        out.status.success().then_some(out)
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7"), "{text}");
    assert!(p.terminate(), "clean exit; log:\n{}", p.log());
}
