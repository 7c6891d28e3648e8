//! The pollen endpoint with its real client: Debian's `pollinate` (the boot-time seeding script of
//! Ubuntu and Debian cloud images) against the real `qrng-bridge` on a simulated card.
//!
//! `pollinate --strict` exits non-zero unless the server's first line is the SHA-512 of the
//! challenge it sent, so its exit status is the check; the bridge's counters show the card bytes.

use std::process::Command;

use qrng_e2e::packaging::skip;
use qrng_e2e::{start_driver, wait_until, Bridge};

const TOKEN: &str = "pollen-test-token";

fn pollinate(server: &str, curl_opts: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("pollinate");
    // --testing: write the seed to stdout instead of /dev/urandom, no cache directory needed.
    cmd.args(["--testing", "--strict", "--server", server]);
    if !curl_opts.is_empty() {
        cmd.args(["--curl-opts", &curl_opts.join(" ")]);
    }
    cmd.output().expect("run pollinate")
}

fn served(bridge: &Bridge) -> u64 {
    let r = bridge.get("/metrics").expect("GET /metrics");
    let text = String::from_utf8(r.body).expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("qrng_entropy_served_bytes_total{device=\"qrng0\"} "))
        .map(|v| v.trim().parse().expect("counter value"))
        .unwrap_or(0)
}

#[test]
fn e2e_pollinate_seeds_from_the_card_through_the_pollen_endpoint() {
    if Command::new("pollinate").arg("--print-user-agent").output().is_err() {
        skip("pollinate", "pollinate is not installed (apt-get install pollinate xxd)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let _driver = start_driver("sim:pcie-4m?seed=7", &rings.join("qrng0.ring"));
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("token file");
    let bridge = Bridge::start(
        &rings,
        &tmp.path().join("dev"),
        &["--no-fuse", "--tokens-file", tokens.to_str().expect("utf-8 path")],
    );
    wait_until("the card is healthy", || bridge.get("/health").ok().filter(|r| r.status == 200));

    for path in ["/", "/pollen"] {
        let before = served(&bridge);
        let url = format!("http://{}{path}", bridge.addr);
        // How pollinate passes a token: curl options, word-split by the script.
        let out = pollinate(&url, &["--oauth2-bearer", TOKEN]);
        assert!(
            out.status.success(),
            "pollinate against {url} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(served(&bridge) - before, 64, "one answer is 64 card bytes");
    }

    // Without the token the challenge is not answered, and pollinate --strict says so.
    let before = served(&bridge);
    let out = pollinate(&format!("http://{}/", bridge.addr), &[]);
    assert!(!out.status.success(), "pollinate accepted an unauthenticated refusal");
    assert_eq!(served(&bridge), before, "a refused request takes no card bytes");
}
