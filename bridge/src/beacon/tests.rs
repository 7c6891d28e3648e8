//! Beacon tests: the serialization against a real NIST pulse, time arithmetic against values
//! computed independently (Python's datetime), pulses made from an in-memory ring (chain,
//! restart, gap, skip list, fail closed), tamper detection of every field, and the HTTP routes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qrng_ring::{Health, Reason};

use super::pulse::*;
use super::verify::{Source, Verifier, VerifyError};
use super::*;
use crate::dispenser::memory::MemoryRing;
use crate::dispenser::{DeviceState, DispenserConfig};

const NIST_PULSE: &str = include_str!("testdata/nist-2018-pulse-54610.json");
const NIST_CERT: &str = include_str!("testdata/nist-2018-certificate.pem");
const KEY_A: &str = include_str!("testdata/test-key-a.pem");
const KEY_B: &str = include_str!("testdata/test-key-b.pem");

/// 2025-12-31T23:58:00.000Z (Python: datetime(2025,12,31,23,58,tzinfo=utc).timestamp()).
const T0: u64 = 1_767_225_480_000;
const PERIOD: u64 = 60_000;
const BASE: &str = "http://beacon.test";

fn nist_pulse() -> Pulse {
    serde_json::from_str::<Envelope>(NIST_PULSE).expect("fixture").pulse
}

fn nist_cert_der() -> Vec<u8> {
    sign::certificate_der(NIST_CERT.as_bytes(), "fixture").expect("certificate")
}

#[test]
fn a_real_nist_pulse_verifies() {
    let p = nist_pulse();
    let der = nist_cert_der();
    assert_eq!(sha512(&der), p.certificate_id, "certificateId is SHA-512 of the DER certificate");
    assert!(sign::verify_signature(&der, &p.signed_bytes(), &p.signature_value).expect("rsa"));
    assert_eq!(p.compute_output(), p.output_value);
    assert_eq!(p.time_ms(), Some(1_535_651_040_000));
    // The JSON this beacon writes is NIST's, hex case included.
    let ours = serde_json::to_value(Envelope { pulse: p.clone() }).expect("json");
    let theirs: serde_json::Value = serde_json::from_str(NIST_PULSE).expect("json");
    assert_eq!(ours, theirs);
    let mut v = Verifier::new(MemSource::of(&[p], &[der]), None).expect("verifier");
    v.verify_pulse(1, 54610).expect("NIST pulse alone");
}

#[test]
fn a_changed_field_of_the_nist_pulse_is_caught() {
    let der = nist_cert_der();
    for (name, change) in field_changes() {
        let mut p = nist_pulse();
        change(&mut p);
        let ok = sign::verify_signature(&der, &p.signed_bytes(), &p.signature_value).expect("rsa")
            && p.compute_output() == p.output_value;
        // listValues' uri and type are not signed: the chain checks catch those (below).
        if !name.ends_with(".uri") && !name.ends_with(".type") {
            assert!(!ok, "{name}: a changed field still verifies");
        }
    }
}

#[test]
fn time_format_and_spans() {
    assert_eq!(format_time(1_535_651_040_000), "2018-08-30T17:44:00.000Z");
    assert_eq!(format_time(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    assert_eq!(parse_time("2024-02-29T23:59:59.999Z"), Some(1_709_251_199_999));
    assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    for bad in [
        "2023-02-29T00:00:00.000Z",
        "2024-02-29T24:00:00.000Z",
        "2024-02-29T23:59:59Z",
        "2024-02-29 23:59:59.999Z",
        "2024-13-01T00:00:00.000Z",
        "+024-02-29T23:59:59.999Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
    // 2024-03-15T10:20:30.000Z -> 2024-03-01 and 2024-01-01 (Python datetime).
    let t = 1_709_251_200_000 + 14 * 86_400_000 + (10 * 3600 + 20 * 60 + 30) * 1000;
    assert_eq!(Span::Month.start(t), 1_709_251_200_000);
    assert_eq!(Span::Year.start(t), 1_704_067_200_000);
    assert_eq!(Span::Day.start(t), 1_709_251_200_000 + 14 * 86_400_000);
    assert_eq!(Span::Hour.start(t), Span::Day.start(t) + 10 * 3_600_000);
}

// ---- pulses made from an in-memory ring ----

struct Fix {
    dir: tempfile::TempDir,
    ring: MemoryRing,
    dispenser: Dispenser,
    beacon: Beacon,
}

fn key_file(dir: &Path, pem: &str, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

fn open_beacon(dir: &Path, key: &str) -> Beacon {
    let db = dir.join("beacon.sqlite");
    let key = key_file(dir, key, "key.pem");
    let signer = Signer::load(&key, None, &sign::self_signed_path(&db)).expect("signer");
    Beacon::new(signer, Store::open(&db).expect("store"), PERIOD as u32, BASE).expect("beacon")
}

fn card_bytes(from: usize, n: usize) -> Vec<u8> {
    qrng_ring::pattern::bytes(0, from + n)[from..].to_vec()
}

fn fixture() -> Fix {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = MemoryRing::new("QX1", false, 1 << 16);
    ring.push(&card_bytes(0, 4096));
    let dispenser = Dispenser::new(DispenserConfig {
        heartbeat_timeout: Duration::from_secs(3600),
        status_interval: Duration::from_millis(2),
    });
    dispenser.attach_source("qrng0", None, ring.source()).expect("attach");
    let beacon = open_beacon(dir.path(), KEY_A);
    Fix { dir, ring, dispenser, beacon }
}

impl Drop for Fix {
    fn drop(&mut self) {
        self.dispenser.shutdown();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn tick(f: &Fix, t: u64) -> Result<Option<Pulse>, BeaconError> {
    rt().block_on(f.beacon.tick(&f.dispenser, t))
}

fn verify_db(store: &Store, chain: u64, to: u64) -> Result<verify::Summary, VerifyError> {
    Verifier::new(store, None)?.verify_range(chain, 1, to)
}

#[test]
fn pulses_reveal_committed_card_bytes_and_chain() {
    let f = fixture();
    let p1 = tick(&f, T0).expect("tick").expect("pulse");
    assert_eq!((p1.chain_index, p1.pulse_index, p1.status_code), (1, 1, status::NEW_CHAIN));
    assert_eq!(p1.local_random_value, card_bytes(0, 64));
    assert_eq!(p1.precommitment_value, sha512(&card_bytes(64, 64)));
    assert_eq!(p1.time_stamp, "2025-12-31T23:58:00.000Z");
    assert_eq!(p1.uri, "http://beacon.test/beacon/2.0/chain/1/pulse/1");
    assert!(p1.list_values.iter().all(|v| v.value == vec![0; 64] && v.uri.is_empty()));
    let p2 = tick(&f, T0 + PERIOD).expect("tick").expect("pulse");
    assert_eq!((p2.pulse_index, p2.status_code), (2, status::NORMAL));
    assert_eq!(p2.local_random_value, card_bytes(64, 64), "the committed value is revealed");
    assert_eq!(p2.precommitment_value, sha512(&card_bytes(128, 64)));
    assert_eq!(p2.list_value("previous").expect("previous").value, p1.output_value);
    assert_eq!(
        p2.certificate_id,
        sha512(&f.beacon.store().certificate(&p2.certificate_id).unwrap().unwrap())
    );
    // The same slot again, or an earlier one: nothing new.
    assert!(tick(&f, T0 + PERIOD).expect("tick").is_none());
    assert!(tick(&f, T0).expect("tick").is_none());
    assert_eq!(verify_db(f.beacon.store(), 1, 2).expect("verifies").to, 2);
}

#[test]
fn the_chain_and_commitment_survive_a_restart() {
    let mut f = fixture();
    tick(&f, T0).expect("tick").expect("pulse");
    // A restart: the same database, key and self-signed certificate.
    f.beacon = open_beacon(f.dir.path(), KEY_A);
    let p2 = tick(&f, T0 + PERIOD).expect("tick").expect("pulse");
    assert_eq!((p2.chain_index, p2.pulse_index, p2.status_code), (1, 2, status::NORMAL));
    assert_eq!(p2.local_random_value, card_bytes(64, 64));
    verify_db(f.beacon.store(), 1, 2).expect("verifies");
    // Another key: its certificate differs, so a new chain starts.
    f.beacon = open_beacon(f.dir.path(), KEY_B);
    let q = tick(&f, T0 + 2 * PERIOD).expect("tick").expect("pulse");
    assert_eq!((q.chain_index, q.pulse_index, q.status_code), (2, 1, status::NEW_CHAIN));
    assert_ne!(q.certificate_id, p2.certificate_id);
    verify_db(f.beacon.store(), 2, 1).expect("verifies");
    verify_db(f.beacon.store(), 1, 2).expect("the old chain still verifies");
}

#[test]
fn a_gap_keeps_the_chain_with_the_gap_status() {
    let f = fixture();
    tick(&f, T0).expect("tick").expect("pulse");
    let p = tick(&f, T0 + 5 * PERIOD).expect("tick").expect("pulse");
    assert_eq!((p.chain_index, p.pulse_index, p.status_code), (1, 2, status::GAP));
    assert_eq!(p.local_random_value, card_bytes(64, 64));
    verify_db(f.beacon.store(), 1, 2).expect("verifies");
}

#[test]
fn a_failed_card_publishes_nothing() {
    let f = fixture();
    tick(&f, T0).expect("tick").expect("pulse");
    f.ring.set_health(Health::Failed, Reason::RepetitionCount);
    rt().block_on(async {
        while f.dispenser.health("qrng0").ok() != Some(DeviceState::Failed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let e = tick(&f, T0 + PERIOD).expect_err("no pulse from a failed card");
    assert!(matches!(e, BeaconError::Card(_)), "{e}");
    assert_eq!(f.beacon.store().last().unwrap().unwrap().pulse_index, 1);
    // A card failure handed to publish directly: the same.
    let e = f.beacon.publish(T0 + PERIOD, Err(DispenseError::NoHealthyDevice)).expect_err("fails");
    assert!(matches!(e, BeaconError::Card(_)));
    assert_eq!(f.beacon.store().last().unwrap().unwrap().pulse_index, 1);
    f.ring.set_health(Health::Ok, Reason::None);
    rt().block_on(async {
        while f.dispenser.health("qrng0").ok() != Some(DeviceState::Ok) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let p = tick(&f, T0 + 2 * PERIOD).expect("tick").expect("pulse");
    assert_eq!((p.pulse_index, p.status_code), (2, status::GAP));
    assert_eq!(p.local_random_value, card_bytes(64, 64), "the commitment held across the failure");
    verify_db(f.beacon.store(), 1, 2).expect("verifies");
}

/// Pulses at 23:58, 23:59, 00:00 (a new year), 00:01: `n` of them.
fn new_year_chain(f: &Fix, n: u64) -> Vec<Pulse> {
    (0..n).map(|i| tick(f, T0 + i * PERIOD).expect("tick").expect("pulse")).collect()
}

#[test]
fn the_skip_list_names_the_first_pulse_of_each_span() {
    let f = fixture();
    let p = new_year_chain(&f, 4);
    let uris = |q: &Pulse| -> Vec<String> { q.list_values.iter().map(|v| v.uri.clone()).collect() };
    let u = |i: usize| p[i].uri.clone();
    // 23:59: previous 23:58, which is the first of its hour, day, month and year in the chain.
    assert_eq!(uris(&p[1]), [u(0), u(0), u(0), u(0), u(0)]);
    // 00:00: previous 23:59, still in 2025: the spans' first pulse is 23:58.
    assert_eq!(uris(&p[2]), [u(1), u(0), u(0), u(0), u(0)]);
    // 00:01: previous 00:00, the first pulse of the new hour, day, month and year.
    assert_eq!(uris(&p[3]), [u(2), u(2), u(2), u(2), u(2)]);
    for (q, names) in p[1..].iter().zip([[0; 5], [1, 0, 0, 0, 0], [2; 5]]) {
        for (lv, i) in q.list_values.iter().zip(names) {
            assert_eq!(lv.value, p[i].output_value);
        }
    }
    verify_db(f.beacon.store(), 1, 4).expect("verifies");
}

// ---- tamper detection ----

/// Pulses and certificates in memory, so a test can change any of them.
struct MemSource {
    pulses: HashMap<(u64, u64), Pulse>,
    certs: HashMap<Vec<u8>, Vec<u8>>,
}

impl MemSource {
    fn of(pulses: &[Pulse], certs: &[Vec<u8>]) -> Self {
        Self {
            pulses: pulses.iter().map(|p| ((p.chain_index, p.pulse_index), p.clone())).collect(),
            certs: certs.iter().map(|c| (sha512(c), c.clone())).collect(),
        }
    }
}

impl Source for MemSource {
    fn pulse(&mut self, chain: u64, index: u64) -> Result<Option<Pulse>, VerifyError> {
        Ok(self.pulses.get(&(chain, index)).cloned())
    }

    fn last(&mut self, _: Option<u64>) -> Result<Option<Pulse>, VerifyError> {
        Ok(self.pulses.values().max_by_key(|p| p.time_ms()).cloned())
    }

    fn certificate(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, VerifyError> {
        Ok(self.certs.get(id).cloned())
    }
}

fn flip(v: &mut [u8]) {
    v[v.len() / 2] ^= 1;
}

fn flip_str(s: &mut String) {
    let c = if s.ends_with('x') { 'y' } else { 'x' };
    s.push(c);
}

type Change = Box<dyn Fn(&mut Pulse)>;

/// One change of each field of a pulse.
fn field_changes() -> Vec<(String, Change)> {
    let mut v: Vec<(String, Change)> = vec![
        ("uri".into(), Box::new(|p| flip_str(&mut p.uri))),
        ("version".into(), Box::new(|p| flip_str(&mut p.version))),
        ("cipherSuite".into(), Box::new(|p| p.cipher_suite ^= 1)),
        ("period".into(), Box::new(|p| p.period ^= 1)),
        ("certificateId".into(), Box::new(|p| flip(&mut p.certificate_id))),
        ("chainIndex".into(), Box::new(|p| p.chain_index ^= 1)),
        ("pulseIndex".into(), Box::new(|p| p.pulse_index ^= 1)),
        (
            "timeStamp".into(),
            Box::new(|p| p.time_stamp = p.time_stamp.replacen(":00.000Z", ":01.000Z", 1)),
        ),
        ("localRandomValue".into(), Box::new(|p| flip(&mut p.local_random_value))),
        ("external.sourceId".into(), Box::new(|p| flip(&mut p.external.source_id))),
        ("external.statusCode".into(), Box::new(|p| p.external.status_code ^= 1)),
        ("external.value".into(), Box::new(|p| flip(&mut p.external.value))),
        ("precommitmentValue".into(), Box::new(|p| flip(&mut p.precommitment_value))),
        ("statusCode".into(), Box::new(|p| p.status_code ^= 2)),
        ("signatureValue".into(), Box::new(|p| flip(&mut p.signature_value))),
        ("outputValue".into(), Box::new(|p| flip(&mut p.output_value))),
    ];
    for k in 0..5 {
        v.push((
            format!("listValues[{k}].value"),
            Box::new(move |p| flip(&mut p.list_values[k].value)),
        ));
        v.push((
            format!("listValues[{k}].uri"),
            Box::new(move |p| flip_str(&mut p.list_values[k].uri)),
        ));
        v.push((
            format!("listValues[{k}].type"),
            Box::new(move |p| flip_str(&mut p.list_values[k].kind)),
        ));
    }
    v
}

#[test]
fn a_changed_field_of_any_pulse_or_the_certificate_is_caught() {
    let f = fixture();
    let pulses = new_year_chain(&f, 4);
    let cert = f.beacon.store().certificate(&pulses[0].certificate_id).unwrap().unwrap();
    let intact = || MemSource::of(&pulses, std::slice::from_ref(&cert));
    Verifier::new(intact(), None).unwrap().verify_range(1, 1, 4).expect("intact chain verifies");
    let mut caught = 0;
    for (i, pulse) in pulses.iter().enumerate() {
        for (name, change) in field_changes() {
            let mut src = intact();
            let key = (pulse.chain_index, pulse.pulse_index);
            change(src.pulses.get_mut(&key).expect("pulse"));
            let r = Verifier::new(src, None).unwrap().verify_range(1, 1, 4);
            assert!(r.is_err(), "pulse {}: a changed {name} was not caught", i + 1);
            caught += 1;
        }
    }
    assert_eq!(caught, 4 * (16 + 15));
    // The certificate: a changed byte anywhere in it.
    for at in [0, cert.len() / 3, cert.len() / 2, cert.len() - 1] {
        let mut bad = cert.clone();
        bad[at] ^= 1;
        let mut src = intact();
        src.certs.insert(pulses[0].certificate_id.clone(), bad);
        assert!(
            Verifier::new(src, None).unwrap().verify_range(1, 1, 4).is_err(),
            "certificate byte {at}"
        );
    }
    // A pinned certificate of another key: refused.
    let other = open_beacon(tempfile::tempdir().unwrap().path(), KEY_B);
    let pinned = other.0.signer.certificate().to_vec();
    let e =
        Verifier::new(intact(), Some(&pinned)).unwrap().verify_range(1, 1, 4).expect_err("pinned");
    assert!(e.to_string().contains("pinned"), "{e}");
    // Pinned to the right certificate: verifies.
    Verifier::new(intact(), Some(&cert)).unwrap().verify_range(1, 1, 4).expect("pinned right");
    // A missing pulse in the range.
    let mut src = intact();
    src.pulses.remove(&(1, 2));
    assert_eq!(
        Verifier::new(src, None).unwrap().verify_range(1, 1, 4),
        Err(VerifyError::Missing { chain: 1, index: 2 })
    );
}

#[test]
fn the_database_verifier_catches_a_rewritten_pulse() {
    let f = fixture();
    let mut p = new_year_chain(&f, 3);
    verify_db(f.beacon.store(), 1, 3).expect("verifies");
    flip(&mut p[1].local_random_value);
    f.beacon.store().overwrite(&p[1]).expect("overwrite");
    let e = verify_db(f.beacon.store(), 1, 3).expect_err("caught");
    assert!(matches!(e, VerifyError::Pulse { index: 2, .. }), "{e}");
}

// ---- HTTP ----

async fn get(app: axum::Router, uri: &str) -> (u16, Vec<u8>) {
    use tower::ServiceExt as _;
    let req = axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    (status, axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec())
}

#[test]
fn the_routes_serve_pulses_and_certificates() {
    use crate::http::{router, AppState, HttpConfig};
    let f = fixture();
    let p = new_year_chain(&f, 3);
    let with = AppState::new(
        f.dispenser.clone(),
        HttpConfig { beacon: Some(f.beacon.clone()), ..HttpConfig::default() },
    )
    .expect("state");
    let without = AppState::new(f.dispenser.clone(), HttpConfig::default()).expect("state");
    rt().block_on(async {
        let pulse = |b: &[u8]| serde_json::from_slice::<Envelope>(b).expect("envelope").pulse;
        let (s, b) = get(router(with.clone()), "/beacon/2.0/pulse/last").await;
        assert_eq!((s, pulse(&b)), (200, p[2].clone()));
        let (s, b) = get(router(with.clone()), "/beacon/2.0/chain/1/pulse/2").await;
        assert_eq!((s, pulse(&b)), (200, p[1].clone()));
        let (s, b) = get(router(with.clone()), "/beacon/2.0/chain/1/pulse/last").await;
        assert_eq!((s, pulse(&b)), (200, p[2].clone()));
        // Between two pulses: the next one.
        let (s, b) = get(router(with.clone()), &format!("/beacon/2.0/pulse/time/{}", T0 + 1)).await;
        assert_eq!((s, pulse(&b)), (200, p[1].clone()));
        let (s, b) = get(router(with.clone()), &format!("/beacon/2.0/pulse/time/{T0}")).await;
        assert_eq!((s, pulse(&b)), (200, p[0].clone()));
        let id = hex(&p[0].certificate_id, false);
        let (s, b) = get(router(with.clone()), &format!("/beacon/2.0/certificate/{id}")).await;
        assert_eq!(s, 200);
        let der = sign::certificate_der(&b, "served").expect("PEM certificate");
        assert_eq!(sha512(&der), p[0].certificate_id);
        let (s, _) =
            get(router(with.clone()), &format!("/beacon/2.0/certificate/{}", id.to_uppercase()))
                .await;
        assert_eq!(s, 200, "ids are read in either case");
        for (uri, want) in [
            ("/beacon/2.0/chain/9/pulse/1", 404),
            ("/beacon/2.0/chain/1/pulse/4", 404),
            ("/beacon/2.0/chain/x/pulse/1", 400),
            ("/beacon/2.0/pulse/time/-1", 400),
            ("/beacon/2.0/certificate/00", 400),
        ] {
            assert_eq!(get(router(with.clone()), uri).await.0, want, "{uri}");
        }
        let (s, _) =
            get(router(with.clone()), &format!("/beacon/2.0/pulse/time/{}", T0 + 3 * PERIOD)).await;
        assert_eq!(s, 404, "no pulse at or after that time");
        let (s, _) = get(router(without.clone()), "/beacon/2.0/pulse/last").await;
        assert_eq!(s, 404, "no beacon, no routes");
        let (_, doc) = get(router(with.clone()), "/api/v1/openapi.json").await;
        let doc: serde_json::Value = serde_json::from_slice(&doc).expect("json");
        assert!(doc["paths"]["/beacon/2.0/chain/{chain}/pulse/{index}"]["get"].is_object());
        let (_, doc) = get(router(without), "/api/v1/openapi.json").await;
        let doc: serde_json::Value = serde_json::from_slice(&doc).expect("json");
        assert!(doc["paths"]["/beacon/2.0/pulse/last"].is_null());
    });
    with.dispenser().shutdown();
}

#[test]
fn keys_and_certificates_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("beacon.sqlite");
    let key = key_file(dir.path(), KEY_A, "a.pem");
    // Readable by others: refused.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = Signer::load(&key, None, &sign::self_signed_path(&db)).expect_err("mode");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let a = Signer::load(&key, None, &sign::self_signed_path(&db)).expect("self-signed");
    let again = Signer::load(&key, None, &sign::self_signed_path(&db)).expect("kept");
    assert_eq!(a.certificate(), again.certificate(), "the self-signed certificate is kept");
    // A given certificate of another key: refused.
    let b_key = key_file(dir.path(), KEY_B, "b.pem");
    let e = Signer::load(&b_key, Some(&sign::self_signed_path(&db)), &dir.path().join("x.pem"))
        .expect_err("mismatch");
    assert!(matches!(e, SignError::CertificateKey { .. }), "{e}");
    // Not a key.
    let junk = key_file(dir.path(), "hello", "junk.pem");
    assert!(matches!(Signer::load(&junk, None, &db), Err(SignError::Key { .. })));
    // The signature verifies with the certificate, and not after a change.
    let sig = a.sign(b"message").expect("sign");
    assert!(sign::verify_signature(a.certificate(), b"message", &sig).unwrap());
    assert!(!sign::verify_signature(a.certificate(), b"messagf", &sig).unwrap());
}
