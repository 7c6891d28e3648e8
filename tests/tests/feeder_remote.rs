//! qrng-feeder's `https://` source against a real bridge behind a real TLS terminator (haproxy
//! requiring a client certificate from a test CA): the bytes it gets are pieces of the fixed-seed
//! card's stream; without the client certificate, with a wrong token, or with a token file
//! others can read, it gets nothing and says why.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qrng_e2e::{free_addr, reference_stream, start_driver, wait_until, Bridge, Placement, Proc};
use qrng_feeder::remote::{RemoteOptions, RemoteSource};
use qrng_feeder::Source;

fn tools_or_skip(test: &str) -> bool {
    let have = |t: &str| Command::new(t).arg("-v").output().is_ok_and(|o| o.status.success());
    let required = std::env::var("QRNG_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    if have("haproxy") && Command::new("openssl").arg("version").output().is_ok() {
        return true;
    }
    assert!(
        !required,
        "{test}: haproxy and openssl are required (apt-get install haproxy openssl)"
    );
    eprintln!("SKIP {test}: haproxy or openssl is not installed");
    false
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, all P-256.
fn pki(dir: &Path) {
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &key,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=qrng test CA"],
        ]
        .concat(),
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        openssl(
            dir,
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN=qrng test {name}"),
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        std::fs::set_permissions(
            dir.join(format!("{name}.key")),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
    }
    let bundle = [
        std::fs::read(dir.join("server.pem")).expect("pem"),
        std::fs::read(dir.join("server.key")).expect("key"),
    ]
    .concat();
    std::fs::write(dir.join("server-bundle.pem"), bundle).expect("bundle");
}

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

#[test]
fn e2e_feeder_reads_a_remote_bridge_over_mutual_tls() {
    if !tools_or_skip("e2e_feeder_reads_a_remote_bridge_over_mutual_tls") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    pki(d);
    let rings = d.join("rings");
    std::fs::create_dir(&rings).expect("rings");
    let spec = "sim:pcie-16m?rate=0&seed=29";
    let placement = Placement::new(reference_stream(spec, 1 << 20, d));
    let _driver = start_driver(spec, &rings.join("qrng0.ring"));
    let tokens = secret(d, "tokens", "feeder-token-1\n");
    let tokens_arg = tokens.display().to_string();
    let bridge =
        Bridge::start(&rings, &d.join("dev"), &["--no-fuse", "--tokens-file", &tokens_arg]);
    // /health is open (the API needs the token): 200 once every device is ok.
    wait_until("qrng0 serves", || (bridge.get("/health").ok()?.status == 200).then_some(()));

    let front = free_addr();
    let cfg = format!(
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend tls\n  bind {front} ssl crt {d}/server-bundle.pem ca-file {d}/ca.pem verify required\n  default_backend bridge\n\
         backend bridge\n  server b {back}\n",
        d = d.display(),
        back = bridge.addr,
    );
    std::fs::write(d.join("haproxy.cfg"), cfg).expect("haproxy.cfg");
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(d.join("haproxy.cfg"));
    let _haproxy = Proc::spawn("haproxy", cmd, d.join("haproxy.log"));
    wait_until("haproxy listens", || std::net::TcpStream::connect(front).ok());

    let url = format!("https://{front}");
    let good = RemoteOptions {
        client: Some((d.join("client.pem"), d.join("client.key"))),
        ca: Some(d.join("ca.pem")),
        token_file: Some(secret(d, "token", "feeder-token-1\n")),
        timeout: Duration::from_secs(20),
    };
    let mut src = RemoteSource::new(&url, &good).expect("remote source");
    let chunks: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let mut b = vec![0u8; 64];
            src.fill(&mut b).expect("64 bytes from the remote bridge");
            b
        })
        .collect();
    placement.assert_disjoint_pieces(&chunks);

    // No client certificate: the TLS handshake is refused.
    let mut no_cert =
        RemoteSource::new(&url, &RemoteOptions { client: None, ..good.clone() }).expect("source");
    assert!(no_cert.fill(&mut [0; 64]).is_err(), "served without a client certificate");
    // A wrong token: the bridge answers 401 and nothing is taken.
    let wrong = RemoteOptions { token_file: Some(secret(d, "wrong", "nope\n")), ..good.clone() };
    let e = RemoteSource::new(&url, &wrong)
        .expect("source")
        .fill(&mut [0; 64])
        .expect_err("wrong token");
    assert!(e.to_string().contains("HTTP 401"), "{e}");
    // A token file others can read is refused before any request, naming the fix.
    let open = d.join("open-token");
    std::fs::write(&open, "feeder-token-1\n").expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = RemoteSource::new(&url, &RemoteOptions { token_file: Some(open), ..good.clone() })
        .expect_err("open token file");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // An unknown CA: the server is not trusted.
    let other = RemoteOptions { ca: None, ..good };
    assert!(RemoteSource::new(&url, &other).expect("source").fill(&mut [0; 64]).is_err());
}
