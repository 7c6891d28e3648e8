//! End-to-end test of the EGD server: quantis-driver on a fixed-seed simulated card, qrng-bridge
//! with `--egd-listen unix:PATH`, and Rust EGD clients (`qrng_e2e::egd`) reading concurrently.
//! Every byte they get is a piece of the card's stream, no byte goes to two clients, and the
//! bridge's counters account for exactly what they read. (The QEMU guest test, tests/vm, drives the
//! same socket from QEMU's rng-egd backend.)

use std::sync::Arc;

use qrng_e2e::egd::EgdClient;
use qrng_e2e::{reference_stream, start_driver, wait_until, Bridge, Placement};

/// The value of an unlabelled counter on a /metrics page.
fn counter(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn e2e_egd_clients_get_disjoint_pieces_of_the_card_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let sock = tmp.path().join("egd.sock");
    let spec = "sim:pcie-16m?rate=0&seed=11";
    let placement = Placement::new(reference_stream(spec, 4 << 20, tmp.path()));
    let _driver = start_driver(spec, &rings.join("qrng0.ring"));
    let egd_arg = format!("unix:{}", sock.display());
    let bridge = Arc::new(Bridge::start(
        &rings,
        &tmp.path().join("dev"),
        &["--no-fuse", "--egd-listen", &egd_arg],
    ));
    wait_until("qrng0 serves", || {
        (bridge.device("qrng0")?["health"].as_str()? == "ok").then_some(())
    });

    let mut probe = EgdClient::connect(&sock).expect("connect to the EGD socket");
    assert_eq!(probe.pid().expect("pid"), bridge.proc.pid().as_raw() as u32);
    assert!(probe.level().expect("level") > 0, "a healthy ring reports bits");

    let clients: Vec<_> = (0..3)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = EgdClient::connect(&sock).expect("connect");
                (0..40)
                    .map(|_| match i {
                        0 => c.read_blocking(255).expect("blocking read"),
                        1 => c.read_blocking_pipelined(64, 4).expect("pipelined reads"),
                        _ => c.read_nonblocking(200).expect("non-blocking read"),
                    })
                    .filter(|b| b.len() >= 8)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut chunks = Vec::new();
    for c in clients {
        chunks.extend(c.join().expect("client thread"));
    }
    let total: usize = chunks.iter().map(Vec::len).sum();
    // Pipelined reads are answered back to back: split them into their 64-byte answers, each
    // its own piece of the stream (two answers need not be adjacent in it).
    let pieces: Vec<Vec<u8>> = chunks
        .iter()
        .flat_map(|c| {
            if c.len() == 256 {
                c.chunks(64).map(<[u8]>::to_vec).collect()
            } else {
                vec![c.clone()]
            }
        })
        .collect();
    placement.assert_disjoint_pieces(&pieces);

    let page = bridge.get("/metrics").expect("GET /metrics");
    let page = String::from_utf8(page.body).expect("UTF-8");
    let served = counter(&page, "qrng_egd_served_bytes_total").expect("served counter");
    // Non-blocking answers shorter than 8 bytes were left out of `chunks` (too short to place).
    assert!(served >= total as u64, "served {served} < read {total}");
    assert_eq!(counter(&page, "qrng_egd_protocol_errors_total"), Some(0));
    assert!(page.contains("qrng_egd_requests_total{command=\"read_blocking\"} 200"), "{page}");
}
