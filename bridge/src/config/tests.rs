//! Parsing of the command line: defaults, listener and option syntax, and refusals.

use super::*;

#[test]
fn defaults_and_repeatable_rings() {
    let c =
        Config::try_parse_from(["qrng-bridge", "--ring", "/run/qrng/a.ring", "--ring", "/b.ring"])
            .expect("parse");
    assert_eq!(c.rings, vec![PathBuf::from("/run/qrng/a.ring"), PathBuf::from("/b.ring")]);
    assert_eq!(
        c.listen,
        vec![Listen::Tcp { addr: "127.0.0.1:8080".parse().expect("addr"), tls: None }]
    );
    assert_eq!(
        c.binds().expect("binds"),
        vec![Bind::Tcp { addr: "127.0.0.1:8080".parse().expect("addr"), tls: false }]
    );
    assert_eq!(c.unix_access(), UnixAccess { mode: 0o660, group: None });
    assert_eq!(c.mount, PathBuf::from("/run/qrng/dev"));
    assert!(!c.no_fuse);
    assert_eq!(c.ring_dir, PathBuf::from("/run/qrng"));
    assert_eq!(c.fuse_mode, 0o444);
    assert!(c.dev_link.is_empty() && !c.allow_control_ioctls && !c.no_watch);
    let h = c.http().expect("http");
    assert_eq!(h.max_bytes, 1 << 20);
    assert!(h.rate_limit.is_none());
    assert!(h.tokens.is_none());
    assert!(h.pin, "CPU placement is on by default");
    assert!(c.ring_owner.is_none());
    assert_eq!(h.threads, 0);
    assert_eq!(h.conn, ConnLimits::default());
    assert_eq!(c.http_listen_backlog, limits::DEFAULT_LISTEN_BACKLOG);
    assert_eq!(h.auth_failures, Some(FailureLimit::default()));
}

#[test]
fn connection_limits_and_the_auth_throttle_are_configurable() {
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--http-max-connections",
        "700",
        "--http-max-connections-per-client",
        "0",
        "--http-header-timeout-ms",
        "1500",
        "--http-idle-timeout-ms",
        "2500",
        "--http-max-header-bytes",
        "4096",
        "--http-reserved-fds",
        "64",
        "--tls-handshake-timeout-ms",
        "700",
        "--http2-max-streams",
        "50",
        "--auth-max-failures",
        "0",
    ])
    .expect("parse");
    let h = c.http().expect("http");
    assert_eq!(
        h.conn,
        ConnLimits {
            max_connections: Some(700),
            per_client: 0,
            header_timeout: Duration::from_millis(1500),
            idle_timeout: Duration::from_millis(2500),
            max_header_bytes: 4096,
            reserved_fds: 64,
            handshake_timeout: Duration::from_millis(700),
            http2_max_streams: 50,
        }
    );
    assert_eq!(h.auth_failures, None);
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--auth-max-failures",
        "3",
        "--auth-failure-window-secs",
        "5",
    ])
    .expect("parse");
    assert_eq!(
        c.http().expect("http").auth_failures,
        Some(FailureLimit { max: 3, window: Duration::from_secs(5) })
    );
    for bad in [
        ["--http-max-connections", "0"],
        ["--http-header-timeout-ms", "0"],
        ["--http-idle-timeout-ms", "0"],
        ["--http-max-header-bytes", "100"],
        ["--auth-failure-window-secs", "0"],
        ["--http-listen-backlog", "0"],
        ["--tls-handshake-timeout-ms", "0"],
        ["--http2-max-streams", "0"],
    ] {
        assert!(Config::try_parse_from(["qrng-bridge", bad[0], bad[1]]).is_err(), "{bad:?}");
    }
}

#[test]
fn listeners_have_a_scheme_each_and_a_bare_address_follows_tls_cert() {
    let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--listen",
        "https://[::]:8443",
        "--listen",
        "http://127.0.0.1:9090/",
        "--listen",
        "0.0.0.0:8444",
        "--listen",
        "unix:/run/qrng/http.sock",
        "--tls-cert",
        "/c.pem",
        "--tls-key",
        "/k.pem",
        "--unix-socket-mode",
        "600",
        "--unix-socket-group",
        "qrng",
    ])
    .expect("parse");
    assert_eq!(
        c.binds().expect("binds"),
        vec![
            Bind::Tcp { addr: a("[::]:8443"), tls: true },
            Bind::Tcp { addr: a("127.0.0.1:9090"), tls: false },
            Bind::Tcp { addr: a("0.0.0.0:8444"), tls: true },
            Bind::Unix(PathBuf::from("/run/qrng/http.sock")),
        ]
    );
    assert_eq!(c.unix_access(), UnixAccess { mode: 0o600, group: Some("qrng".into()) });
    // HTTPS without a certificate, a relative socket path, a key without a certificate.
    let c =
        Config::try_parse_from(["qrng-bridge", "--listen", "https://127.0.0.1:1"]).expect("parse");
    assert!(c.binds().expect_err("no cert").contains("--tls-cert"));
    for bad in [
        &["--listen", "unix:relative.sock"][..],
        &["--listen", "ftp://1.2.3.4:5"],
        &["--tls-key", "/k.pem"],
        &["--tls-client-ca", "/ca.pem"],
    ] {
        let args = ["qrng-bridge"].iter().chain(bad).copied();
        assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
    }
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--listen",
        "http://127.0.0.1:1",
        "--tls-cert",
        "/c",
        "--tls-key",
        "/k",
        "--tls-client-ca",
        "/ca",
    ])
    .expect("parse");
    assert!(c.binds().expect_err("mTLS on no HTTPS listener").contains("--tls-client-ca"));
}

#[test]
fn ring_owner_is_a_user_name_or_uid() {
    let c = Config::try_parse_from(["qrng-bridge", "--ring-owner", "4242"]).expect("parse");
    let t = c.ring_trust().expect("trust");
    assert!(t.trusts(0) && t.trusts(4242) && !t.trusts(4243));
    let c = Config::try_parse_from(["qrng-bridge", "--ring-owner", "root"]).expect("parse");
    assert_eq!(c.ring_trust(), Ok(qrng_ring::Trust::owner(0)));
    let c = Config::try_parse_from(["qrng-bridge", "--ring-owner", "no-such-user-qrng-test"])
        .expect("parse");
    assert!(c.ring_trust().expect_err("unknown user").contains("no such user"));
    // The default: the packaged user where it exists, else root alone.
    let c = Config::try_parse_from(["qrng-bridge"]).expect("parse");
    let t = c.ring_trust().expect("default");
    assert!(t.trusts(0));
    match nix::unistd::User::from_name(DEFAULT_RING_OWNER) {
        Ok(Some(u)) => assert!(t.trusts(u.uid.as_raw())),
        _ => assert_eq!(t, qrng_ring::Trust::root_only()),
    }
}

#[test]
fn cors_origins_are_repeatable() {
    let c = Config::try_parse_from(["qrng-bridge"]).expect("parse");
    assert_eq!(c.http().expect("http").cors, None);
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--cors-origin",
        "https://a.example",
        "--cors-origin",
        "http://b.example:8080",
    ])
    .expect("parse");
    let want = ["https://a.example", "http://b.example:8080"]
        .map(axum::http::HeaderValue::from_static)
        .to_vec();
    assert_eq!(c.http().expect("http").cors, Some(CorsOrigins::List(want)));
    let c = Config::try_parse_from(["qrng-bridge", "--cors-origin", "*"]).expect("parse");
    assert_eq!(c.http().expect("http").cors, Some(CorsOrigins::Any));
    let c = Config::try_parse_from(["qrng-bridge", "--cors-origin", "example.org"]).expect("parse");
    assert!(c.http().expect_err("no scheme").to_string().contains("--cors-origin"));
}

#[test]
fn cpu_affinity_can_be_turned_off() {
    let c = Config::try_parse_from(["qrng-bridge", "--http-cpu-affinity", "off"]).expect("parse");
    assert!(!c.http().expect("http").pin);
    let c = Config::try_parse_from(["qrng-bridge", "--http-cpu-affinity", "auto"]).expect("parse");
    assert!(c.http().expect("http").pin);
    assert!(Config::try_parse_from(["qrng-bridge", "--http-cpu-affinity", "3"]).is_err());
}

#[test]
fn mix_specs() {
    let c = Config::try_parse_from(["qrng-bridge", "--mix", "qrng0,qrng1", "--mix", "pair=a,b,c"])
        .expect("parse");
    assert_eq!(
        c.mix,
        [
            MixSpec { name: None, members: vec!["qrng0".into(), "qrng1".into()] },
            MixSpec {
                name: Some("pair".into()),
                members: vec!["a".into(), "b".into(), "c".into()]
            },
        ]
    );
    assert!(!c.mix_degrade);
    for bad in ["qrng0", "=a,b", "x=a,", "a,b/c", "../x=a,b"] {
        let err = Config::try_parse_from(["qrng-bridge", "--mix", bad]).expect_err(bad);
        assert!(err.to_string().contains("--mix"), "{bad}: {err}");
    }
}

#[test]
fn mcp_allowed_hosts() {
    let hosts = |args: &[&str]| {
        let mut all = vec!["qrng-bridge"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("parse").http().expect("http").mcp_allowed_hosts
    };
    assert_eq!(hosts(&[]), ["localhost", "127.0.0.1", "::1"]);
    assert_eq!(
        hosts(&["--mcp-allowed-host", "a.example", "--mcp-allowed-host", "b.example:8443"]),
        ["a.example", "b.example:8443"]
    );
    assert_eq!(hosts(&["--mcp-allowed-host", "a.example,b.example"]), ["a.example", "b.example"]);
    assert!(hosts(&["--mcp-allowed-host", "*"]).is_empty(), "* accepts any Host");
}

#[test]
fn egd_listeners_are_unix_or_tcp_and_repeatable() {
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--egd-listen",
        "unix:/run/qrng/egd.sock",
        "--egd-listen",
        "tcp:127.0.0.1:7777",
        "--egd-max-clients",
        "3",
    ])
    .expect("parse");
    let e = c.egd();
    assert_eq!(
        e.listen,
        vec![
            EgdListen::Unix(PathBuf::from("/run/qrng/egd.sock")),
            EgdListen::Tcp("127.0.0.1:7777".parse().expect("addr")),
        ]
    );
    assert_eq!((e.max_clients, e.socket_mode), (3, 0o660));
    let d = Config::try_parse_from(["qrng-bridge"]).expect("parse");
    assert!(d.egd().listen.is_empty());
    assert_eq!(d.egd_max_clients, 64);
    for bad in ["unix:", "tcp:nowhere", "/run/egd.sock", "udp:1.2.3.4:5"] {
        assert!(Config::try_parse_from(["qrng-bridge", "--egd-listen", bad]).is_err(), "{bad}");
    }
    assert!(Config::try_parse_from(["qrng-bridge", "--egd-max-clients", "0"]).is_err());
}

#[test]
fn beacon_options() {
    let c = Config::try_parse_from(["qrng-bridge"]).expect("parse");
    assert!(c.beacon().is_none(), "no beacon without a key");
    let c = Config::try_parse_from([
        "qrng-bridge",
        "--listen",
        "127.0.0.1:9000",
        "--beacon-key",
        "/k.pem",
        "--beacon-period",
        "5",
    ])
    .expect("parse");
    let b = c.beacon().expect("beacon");
    assert_eq!((b.key, b.cert, b.period_secs), (PathBuf::from("/k.pem"), None, 5));
    assert_eq!(b.db, PathBuf::from("/var/lib/qrng/beacon.sqlite"));
    assert_eq!(b.base_url, "http://127.0.0.1:9000");
    for bad in ["0", "86401"] {
        assert!(Config::try_parse_from(["qrng-bridge", "--beacon-period", bad]).is_err(), "{bad}");
    }
}

#[test]
fn bad_values_are_refused() {
    assert!(Config::try_parse_from(["qrng-bridge", "--listen", "nowhere"]).is_err());
    assert!(Config::try_parse_from(["qrng-bridge", "--log-format", "xml"]).is_err());
    assert!(Config::try_parse_from(["qrng-bridge", "--fuse-mode", "999"]).is_err());
    assert!(Config::try_parse_from(["qrng-bridge", "--fuse-mode", "1777"]).is_err());
    assert!(Config::try_parse_from(["qrng-bridge", "--dev-link", "/dev/x=a/b"]).is_err());
    let c = Config::try_parse_from(["qrng-bridge", "--rate-limit", "5", "--log-format", "json"])
        .expect("parse");
    assert_eq!(c.http().expect("http").rate_limit, Some(RateLimit { per_second: 5.0, burst: 20 }));
    assert_eq!(c.log_format, LogFormat::Json);
}
