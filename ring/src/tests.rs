//! Unit tests of the ring: wrap-around, full, empty, validation, attach/re-attach, and a property
//! test of random interleavings against a model.

use super::layout::*;
use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};

fn opts(capacity: u64) -> RingOptions {
    RingOptions { capacity, ..RingOptions::default() }
}

fn ring_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("qrng0.ring")
}

fn pattern(start: u64, len: usize) -> Vec<u8> {
    super::pattern::bytes(start, len)
}

/// Overwrites bytes of the header at `off` (what a hostile or buggy peer could do).
fn poke(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

#[test]
fn ring_create_sets_header_mode_and_starting_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let p = Producer::open(&path, &opts(8192)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), DATA_OFFSET + 8192);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let s = p.status().unwrap();
    assert_eq!(
        (s.health, s.reason, s.epoch, s.capacity),
        (Health::Starting, Reason::None, 1, 8192)
    );
    assert_eq!((s.head, s.tail), (0, 0));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn ring_mode_is_configurable_and_bad_options_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    for bad in [
        RingOptions { capacity: 5000, ..RingOptions::default() },
        RingOptions { capacity: 1024, ..RingOptions::default() },
        RingOptions { mode: 0o10644, ..RingOptions::default() },
    ] {
        assert!(matches!(Producer::open(&path, &bad), Err(Error::BadOptions { .. })));
        assert!(!path.exists(), "a refused open must not create the file");
    }
    let _p =
        Producer::open(&path, &RingOptions { capacity: 4096, mode: 0o600, group: None }).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
}

#[test]
fn ring_empty_full_and_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let mut c = Consumer::open(&path).unwrap();
    let mut buf = vec![0u8; 8192];
    assert_eq!(c.available().unwrap(), 0);
    assert_eq!(c.read(&mut buf).unwrap(), 0, "empty ring reads nothing");

    // Fill completely; the next write takes nothing.
    let data = pattern(0, 5000);
    assert_eq!(p.write(&data).unwrap(), 4096);
    assert_eq!(p.free().unwrap(), 0);
    assert_eq!(p.write(&data[4096..]).unwrap(), 0, "full ring takes nothing");

    // Consume 3000, then write 3000 more: this write wraps around the end of the data area.
    assert_eq!(c.read(&mut buf[..3000]).unwrap(), 3000);
    assert_eq!(&buf[..3000], &data[..3000]);
    let more = pattern(4096, 3000);
    assert_eq!(p.write(&more).unwrap(), 3000);
    // One read spans the wrap.
    assert_eq!(c.read(&mut buf).unwrap(), 4096);
    let mut expect = data[3000..4096].to_vec();
    expect.extend_from_slice(&more);
    assert_eq!(&buf[..4096], &expect[..]);
    assert_eq!(c.available().unwrap(), 0);
    let s = c.status().unwrap();
    assert_eq!((s.head, s.tail, s.bytes_published), (7096, 7096, 7096));
}

#[test]
fn ring_second_producer_and_second_consumer_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let p = Producer::open(&path, &opts(4096)).unwrap();
    let err = Producer::open(&path, &opts(4096)).unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { role: Role::Producer, .. }), "{err}");
    assert!(err.to_string().contains("another producer is attached"));
    let c = Consumer::open(&path).unwrap();
    let err = Consumer::open(&path).unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { role: Role::Consumer, .. }), "{err}");
    drop((p, c));
    // Both roles are free again once the holders are gone.
    Producer::open(&path, &opts(4096)).unwrap();
    Consumer::open(&path).unwrap();
}

#[test]
fn ring_producer_reattach_keeps_unread_data_and_bumps_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let data = pattern(0, 3000);
    {
        let mut p = Producer::open(&path, &opts(4096)).unwrap();
        p.write(&data).unwrap();
        p.set_health(Health::Ok, Reason::None);
    }
    let mut c = Consumer::open(&path).unwrap();
    let mut buf = vec![0u8; 1000];
    assert_eq!(c.read(&mut buf).unwrap(), 1000);
    // A restarted producer (asking for another size) keeps the file's capacity and the unread bytes.
    let mut p = Producer::open(&path, &opts(1 << 20)).unwrap();
    assert_eq!(p.capacity(), 4096);
    let s = c.status().unwrap();
    assert_eq!((s.epoch, s.health), (2, Health::Starting));
    p.write(&pattern(3000, 100)).unwrap();
    let mut rest = vec![0u8; 4096];
    let n = c.read(&mut rest).unwrap();
    assert_eq!(n, 2100);
    let mut expect = data[1000..].to_vec();
    expect.extend_from_slice(&pattern(3000, 100));
    assert_eq!(&rest[..n], &expect[..]);
}

#[test]
fn ring_read_append_keeps_existing_bytes_spans_the_wrap_and_consumes_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let mut c = Consumer::open(&path).unwrap();
    let mut out = b"prefix".to_vec();
    assert_eq!(c.read_append(&mut out, 100).unwrap(), 0, "empty ring appends nothing");
    assert_eq!(out, b"prefix");

    let data = pattern(0, 4096);
    assert_eq!(p.write(&data).unwrap(), 4096);
    // Unaligned amounts, so both the byte head/tail and the word loop of the copy run.
    assert_eq!(c.read_append(&mut out, 3001).unwrap(), 3001);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], &data[..3001]);
    let more = pattern(4096, 2500);
    assert_eq!(p.write(&more).unwrap(), 2500);
    // One append spans the wrap; asking for more than is there takes what is there.
    let mut out2 = Vec::new();
    assert_eq!(c.read_append(&mut out2, 10_000).unwrap(), 1095 + 2500);
    let mut expect = data[3001..].to_vec();
    expect.extend_from_slice(&more);
    assert_eq!(out2, expect);
    // Mixed with plain reads, the stream continues exactly where the appends stopped.
    let last = pattern(6596, 7);
    p.write(&last).unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(c.read(&mut buf).unwrap(), 3);
    assert_eq!(buf, last[..3]);
    let mut out3 = Vec::with_capacity(1);
    assert_eq!(c.read_append(&mut out3, 4).unwrap(), 4);
    assert_eq!(out3, last[3..]);
    assert_eq!(c.status().unwrap().head, 6603);
}

#[test]
fn ring_consumer_reattach_resumes_at_recorded_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let data = pattern(0, 4000);
    p.write(&data).unwrap();
    let mut buf = vec![0u8; 1500];
    {
        let mut c = Consumer::open(&path).unwrap();
        assert_eq!(c.read(&mut buf).unwrap(), 1500);
    }
    let mut c = Consumer::open(&path).unwrap();
    assert_eq!(c.position(), 1500);
    let mut rest = vec![0u8; 4096];
    assert_eq!(c.read(&mut rest).unwrap(), 2500);
    assert_eq!(&rest[..2500], &data[1500..]);
}

#[test]
fn ring_lease_holds_space_until_dropped_and_releases_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let mut c = Consumer::open(&path).unwrap();
    let data = pattern(0, 4096);
    assert_eq!(p.write(&data).unwrap(), 4096);
    // Two leases and a copy after them.
    let a = c.lend(1000, 4096).unwrap().expect("lend a");
    let b = c.lend(1000, 4096).unwrap().expect("lend b");
    assert_eq!((a.as_ref(), b.as_ref()), (&data[..1000], &data[1000..2000]));
    let mut buf = vec![0u8; 500];
    assert_eq!(c.read(&mut buf).unwrap(), 500);
    assert_eq!(&buf[..], &data[2000..2500]);
    assert_eq!((c.position(), c.pinned(), a.pinned()), (2500, 2500, 2500));
    // Nothing is free for the producer while the first lease is out, whatever ends after it.
    drop(b);
    assert_eq!(p.free().unwrap(), 0);
    assert_eq!(c.pinned(), 2500);
    // The first lease ends: the head moves past it, the released second one and the copy.
    drop(a);
    assert_eq!(p.free().unwrap(), 2500);
    assert_eq!(c.pinned(), 0);
    // A copy with no lease out moves the head at once.
    assert_eq!(c.read(&mut buf[..100]).unwrap(), 100);
    assert_eq!(p.free().unwrap(), 2600);
}

#[test]
fn ring_lend_refuses_what_it_cannot_lend_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let mut c = Consumer::open(&path).unwrap();
    assert!(c.lend(10, 4096).unwrap().is_none(), "empty ring");
    assert_eq!(p.write(&pattern(0, 3000)).unwrap(), 3000);
    assert!(c.lend(3001, 4096).unwrap().is_none(), "more than available");
    assert!(c.lend(0, 4096).unwrap().is_none(), "nothing to lend");
    let held = c.lend(2000, 4096).unwrap().expect("lend");
    assert!(c.lend(500, 2400).unwrap().is_none(), "over the pinned limit");
    assert_eq!(c.position(), 2000);
    drop(held);
    // Across the end of the data area: refused; a copy of the same bytes works.
    let mut buf = vec![0u8; 4096];
    assert_eq!(c.read(&mut buf[..1000]).unwrap(), 1000);
    assert_eq!(p.write(&pattern(3000, 2000)).unwrap(), 2000);
    assert!(c.lend(1500, 4096).unwrap().is_none(), "wraps");
    assert_eq!(c.position(), 3000);
    assert_eq!(c.read(&mut buf[..1500]).unwrap(), 1500);
    assert_eq!(&buf[..1500], &pattern(3000, 1500)[..]);
}

#[test]
fn ring_restarted_consumer_skips_bytes_lent_by_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    assert_eq!(p.write(&pattern(0, 3000)).unwrap(), 3000);
    let mut c = Consumer::open(&path).unwrap();
    let lease = c.lend(1000, 4096).unwrap().expect("lend");
    // The consumer goes away with its lease still out (as if the process died mid-send): its lock
    // lasts as long as the lease, so no other consumer can take the ring meanwhile.
    drop(c);
    assert!(matches!(Consumer::open(&path), Err(Error::AlreadyAttached { .. })));
    // Until the lease ends the head stays put (a crash would end it without releasing: what a
    // restarted consumer then does is `ring_consumer_resumes_at_the_recorded_cursor`).
    assert_eq!(p.free().unwrap(), 1096);
    let f = OpenOptions::new().read(true).open(&path).unwrap();
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, OFF_CURSOR).unwrap();
    assert_eq!(u64::from_le_bytes(w), 1000, "the cursor records what was handed out");
    drop(lease);
    assert_eq!(p.free().unwrap(), 2096);
    assert!(Consumer::open(&path).is_ok(), "the lock went with the last lease");
}

#[test]
fn ring_consumer_resumes_at_the_recorded_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    assert_eq!(p.write(&pattern(0, 3000)).unwrap(), 3000);
    // A dead consumer's trace: head 200, cursor 1000 (it had lent 200..1000).
    poke(&path, OFF_HEAD, &200u64.to_le_bytes());
    poke(&path, OFF_CURSOR, &1000u64.to_le_bytes());
    let mut c = Consumer::open(&path).unwrap();
    assert_eq!(c.position(), 1000);
    assert_eq!(p.free().unwrap(), 4096 - 2000, "the dead consumer's lent bytes are freed");
    let mut buf = vec![0u8; 100];
    assert_eq!(c.read(&mut buf).unwrap(), 100);
    assert_eq!(&buf[..], &pattern(1000, 100)[..]);
    drop(c);
    // A stale cursor (behind the head) or one beyond the tail is ignored.
    for bad in [500u64, 5000] {
        poke(&path, OFF_CURSOR, &bad.to_le_bytes());
        let c = Consumer::open(&path).unwrap();
        assert_eq!(c.position(), 1100, "cursor {bad}");
    }
}

#[test]
fn ring_status_round_trips_identity_params_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let id = Identity {
        model: "pcie-240m".into(),
        serial: "é".repeat(20), // 40 bytes: must be cut to 30 (a character boundary), not 31
        modules: 0xfff,
        simulated: true,
        extractor: "toeplitz".into(),
        board_version: 0x0205_0203,
        modules_present: 0xfff,
        family: Some(CardFamily::Chip),
        chip_mode: Some(ChipMode::Sample),
    };
    p.set_identity(&id);
    let params =
        HealthParams { min_entropy_milli: 7500, rct_cutoff: 5, apt_window: 1024, apt_cutoff: 20 };
    p.set_health_params(&params);
    p.set_health(Health::Failed, Reason::AdaptiveProportion);
    p.add_counters(10, 1, 3);
    p.add_counters(5, 0, 0);
    p.heartbeat();
    let c = Consumer::open(&path).unwrap();
    let s = c.status().unwrap();
    assert_eq!(s.identity.model, "pcie-240m");
    assert_eq!(s.identity.serial, "é".repeat(15));
    assert_eq!((s.identity.modules, s.identity.simulated), (0xfff, true));
    assert_eq!(s.identity.extractor, "toeplitz");
    assert_eq!(s.identity.board_version, 0x0205_0203);
    assert_eq!(s.identity.modules_present, 0xfff);
    assert_eq!(s.identity.family, Some(CardFamily::Chip));
    assert_eq!(s.identity.chip_mode, Some(ChipMode::Sample));
    assert_eq!(s.params, params);
    assert_eq!((s.health, s.reason), (Health::Failed, Reason::AdaptiveProportion));
    assert_eq!((s.raw_bytes_read, s.health_alarms, s.bytes_dropped), (15, 1, 3));
    assert!(s.heartbeat_age().unwrap() < Duration::from_secs(60));
}

#[test]
fn ring_rejects_missing_and_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    assert!(matches!(Consumer::open(&path), Err(Error::Io { op: "open", .. })));
    std::fs::write(&path, [0u8; 100]).unwrap();
    assert!(matches!(Consumer::open(&path), Err(Error::Truncated { len: 100, .. })));
    drop(Producer::open(&dir.path().join("b.ring"), &opts(8192)).unwrap());
    let f = OpenOptions::new().write(true).open(dir.path().join("b.ring")).unwrap();
    f.set_len(DATA_OFFSET + 4096).unwrap();
    let err = Consumer::open(&dir.path().join("b.ring")).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    // A producer does not "repair" a truncated file either.
    assert!(matches!(
        Producer::open(&dir.path().join("b.ring"), &opts(8192)),
        Err(Error::Truncated { .. })
    ));
}

/// Each header corruption gives its own typed error, for both roles.
#[test]
fn ring_every_header_corruption_is_a_typed_error() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, u64, Vec<u8>, Check)> = vec![
        ("magic", OFF_MAGIC, b"NOTARING".to_vec(), |e| matches!(e, Error::BadMagic { .. })),
        ("version", OFF_VERSION, 2u32.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::BadVersion { found: 2, .. })
        }),
        ("header len", OFF_HEADER_LEN, 64u32.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::BadLayout { .. })
        }),
        ("data offset", OFF_DATA_OFFSET, 0u64.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::BadLayout { .. })
        }),
        ("capacity npot", OFF_CAPACITY, 5000u64.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::CapacityNotPowerOfTwo { .. })
        }),
        ("capacity zero", OFF_CAPACITY, 0u64.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::CapacityNotPowerOfTwo { .. })
        }),
        ("capacity huge", OFF_CAPACITY, (1u64 << 62).to_le_bytes().to_vec(), |e| {
            matches!(e, Error::CapacityNotPowerOfTwo { .. })
        }),
        ("capacity beyond file", OFF_CAPACITY, (1u64 << 20).to_le_bytes().to_vec(), |e| {
            matches!(e, Error::Truncated { .. })
        }),
        ("head beyond tail", OFF_HEAD, 10u64.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::HeadBeyondTail { head: 10, tail: 0, .. })
        }),
        ("tail too far", OFF_TAIL, 4097u64.to_le_bytes().to_vec(), |e| {
            matches!(e, Error::TailTooFarAhead { tail: 4097, .. })
        }),
    ];
    for (name, off, bytes, check) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = ring_path(&dir);
        drop(Producer::open(&path, &opts(4096)).unwrap());
        let before = std::fs::read(&path).unwrap();
        poke(&path, off, &bytes);
        let e = Consumer::open(&path).unwrap_err();
        assert!(check(&e), "{name}: consumer got {e}");
        let e = Producer::open(&path, &opts(4096)).unwrap_err();
        assert!(check(&e), "{name}: producer got {e}");
        assert!(e.to_string().contains("qrng0.ring"), "{name}: error names the file: {e}");
        // Refusing changes nothing in the file.
        let mut after = std::fs::read(&path).unwrap();
        after[off as usize..off as usize + bytes.len()]
            .copy_from_slice(&before[off as usize..off as usize + bytes.len()]);
        assert_eq!(after, before, "{name}: a refused attach must not write");
    }
}

#[test]
fn ring_corruption_after_attach_is_caught_on_the_next_access() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let mut c = Consumer::open(&path).unwrap();
    p.write(&[1; 100]).unwrap();
    assert_eq!(c.available().unwrap(), 100);
    // A hostile producer claims more than a capacity of data: the consumer must not copy it.
    poke(&path, OFF_TAIL, &100_000u64.to_le_bytes());
    let mut buf = vec![0u8; 200_000];
    assert!(matches!(c.read(&mut buf), Err(Error::TailTooFarAhead { .. })));
    // A tail that goes backwards.
    poke(&path, OFF_TAIL, &50u64.to_le_bytes());
    assert!(matches!(c.available(), Err(Error::IndexWentBack { index: "tail", .. })));
    // A hostile consumer moves head beyond tail: the producer refuses to trust it when it looks.
    poke(&path, OFF_TAIL, &100u64.to_le_bytes());
    poke(&path, OFF_HEAD, &5000u64.to_le_bytes());
    assert!(matches!(p.write(&vec![0; 5000]), Err(Error::HeadBeyondTail { .. })));
    // And a head that goes backwards.
    poke(&path, OFF_HEAD, &0u64.to_le_bytes());
    p.write(&[0; 10]).unwrap();
    // unknown health code
    poke(&path, OFF_HEALTH, &(77u64 << 32).to_le_bytes());
    assert!(matches!(c.status(), Err(Error::BadStatus { health: 77, .. })));
}

#[test]
fn ring_producer_detects_head_going_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    let mut c = Consumer::open(&path).unwrap();
    p.write(&[7; 4096]).unwrap();
    c.read(&mut [0; 2000]).unwrap();
    assert_eq!(p.write(&[7; 2000]).unwrap(), 2000); // refreshes cached head to 2000
    poke(&path, OFF_HEAD, &100u64.to_le_bytes());
    assert!(matches!(p.write(&[7; 10]), Err(Error::IndexWentBack { index: "head", .. })));
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Read(usize),
    ReattachConsumer,
    ReattachProducer,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..6000).prop_map(Op::Write),
        4 => (0usize..6000).prop_map(Op::Read),
        1 => Just(Op::ReattachConsumer),
        1 => Just(Op::ReattachProducer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random interleavings of writes, reads and re-attaches behave like a bounded FIFO.
    #[test]
    fn ring_matches_fifo_model(ops in proptest::collection::vec(op(), 1..80), cap_shift in 12u32..14) {
        let cap = 1u64 << cap_shift;
        let dir = tempfile::tempdir().unwrap();
        let path = ring_path(&dir);
        let mut p = Producer::open(&path, &opts(cap)).unwrap();
        let mut c = Consumer::open(&path).unwrap();
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Write(n) => {
                    let data = pattern(next, n);
                    let took = p.write(&data).unwrap();
                    prop_assert_eq!(took, n.min(cap as usize - model.len()));
                    model.extend(&data[..took]);
                    next += took as u64;
                }
                Op::Read(n) => {
                    let mut buf = vec![0u8; n];
                    let got = c.read(&mut buf).unwrap();
                    prop_assert_eq!(got, n.min(model.len()));
                    let want: Vec<u8> = model.drain(..got).collect();
                    prop_assert_eq!(&buf[..got], &want[..]);
                }
                Op::ReattachConsumer => { drop(c); c = Consumer::open(&path).unwrap(); }
                Op::ReattachProducer => { drop(p); p = Producer::open(&path, &opts(cap)).unwrap(); }
            }
            prop_assert_eq!(c.available().unwrap(), model.len());
            prop_assert_eq!(p.free().unwrap(), cap as usize - model.len());
        }
    }
}

#[test]
fn reason_code_is_the_serialized_name_for_every_wire_value() {
    let mut seen = 0;
    for wire in 0..=u32::from(u8::MAX) + 1 {
        let Some(reason) = Reason::from_code(wire) else { continue };
        seen += 1;
        assert_eq!(reason as u32, wire, "{reason:?} round-trips its wire value");
        let serialized = serde_json::to_value(reason).unwrap();
        assert_eq!(serialized.as_str(), Some(reason.code()), "{reason:?}");
    }
    assert!(seen >= 12, "every defined reason was checked ({seen})");
    assert_eq!(Reason::from_code(10), Some(Reason::NoData));
    assert_eq!(Reason::NoData.code(), "no-data");
}

#[test]
fn identity_fields_added_later_read_as_unknown_when_a_producer_leaves_them_zero() {
    // A producer that predates modules_present, family and chip_mode never writes them: the
    // reserved bytes stay zero, which a reader must take as "unknown".
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = Producer::open(&path, &opts(4096)).unwrap();
    p.set_identity(&Identity { model: "pcie-16m".into(), modules: 0xf, ..Identity::default() });
    let s = Consumer::open(&path).unwrap().status().unwrap();
    assert_eq!(s.identity.modules, 0xf);
    assert_eq!(
        (s.identity.modules_present, s.identity.family, s.identity.chip_mode),
        (0, None, None)
    );
    assert_eq!(CardFamily::from_code(3), None);
    assert_eq!(ChipMode::from_code(0), None);
}
