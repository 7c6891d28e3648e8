//! HTTPS: the certificate and key (PEM files), their reload, optional client certificates (mutual
//! TLS), and the rustls settings every TLS listener shares.
//!
//! rustls with the `ring` provider, TLS 1.3 and 1.2 with rustls' default cipher suites (AEAD
//! only, forward secrecy only), ALPN `h2` and `http/1.1`. The certificate is chosen per handshake
//! by [`CertStore`] (a rustls `ResolvesServerCert`): a reload swaps the pair it hands out, so new
//! handshakes get the new pair and open connections keep the one they were made with.
//!
//! Reload ([`keep_fresh`]): on SIGHUP, and when either file changes. Changes are found by polling
//! the files' metadata every [`RELOAD_POLL`] (`stat(2)` follows symlinks, so certbot's
//! `live/NAME/fullchain.pem -> ../../archive/NAME/fullchainN.pem` swap is seen as a new inode, as
//! is any rename over the file; an in-place rewrite changes the mtime or size). A directory
//! watch (inotify, `notify`) would see the rename in `live/` but not a change of the symlink's
//! target directory, and would need one watch per directory on the way; two `stat` calls a
//! second cost nothing. A pair that does not load (unreadable, not PEM, the key not matching the
//! certificate, e.g. seen halfway through a renewal that writes the certificate before the key)
//! keeps the previous pair and logs why, once per change of the files; no key material is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often [`keep_fresh`] looks at the certificate and key files for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// ALPN protocols offered, in the server's order of preference (RFC 7301; RFC 9113 §3.2).
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors loading TLS files. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS {what} {path} is not valid PEM: {detail}")]
    Pem { what: &'static str, path: PathBuf, detail: String },
    #[error("TLS certificate file {path} holds no certificate (expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the server's first, then its chain)")]
    NoCertificate { path: PathBuf },
    #[error("TLS key file {path} holds no private key (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)")]
    NoKey { path: PathBuf },
    #[error("TLS key {path} cannot be used (RSA of 2048 bits or more, ECDSA P-256/P-384 or Ed25519): {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("TLS key {key} does not belong to the certificate {cert} (the first certificate of the file must be the one the key was made for): {detail}")]
    Mismatch { cert: PathBuf, key: PathBuf, detail: String },
    #[error("TLS client CA file {path} cannot be used: {detail}")]
    ClientCa { path: PathBuf, detail: String },
    #[error("TLS settings refused: {0}")]
    Config(String),
}

/// The process's crypto provider: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Certificates of a PEM file, in order.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        what,
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates("certificate", cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }
    let pem = read("key", key)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: key.to_owned() },
        // The parser's message names what it could not read, never the key's bytes.
        e => TlsError::Pem { what: "key", path: key.to_owned(), detail: e.to_string() },
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadKey { path: key.to_owned(), detail: e.to_string() })?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(pair)
}

/// What a file's metadata says about its content: a change of any of these is a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { dev: m.dev(), ino: m.ino(), len: m.len(), mtime: m.modified().ok() })
}

/// The certificate and key handed to new handshakes, and the files they come from (see the
/// module docs).
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last loaded (or last failed to load).
    seen: Mutex<[Option<Stamp>; 2]>,
}

impl CertStore {
    /// Loads the pair; an error names the file (start-up refuses to serve on it).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let seen = [stamp(cert), stamp(key)];
        let pair = load_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(seen),
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Loads the files again; on failure the previous pair stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = [stamp(&self.cert), stamp(&self.key)];
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = seen;
        let pair = load_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// Whether either file changed since the last (attempted) load.
    pub fn changed(&self) -> bool {
        let now = [stamp(&self.cert), stamp(&self.key)];
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != now
    }

    /// [`Self::reload`], logged.
    pub fn reload_logged(&self, why: &'static str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.cert.display(),
                reason = why,
                "TLS certificate reloaded; new connections use it"
            ),
            Err(e) => tracing::error!(
                error = %e,
                reason = why,
                "TLS certificate not reloaded; the previous one stays in use"
            ),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reloads `store` on SIGHUP and when its files change (module docs); runs until dropped.
pub async fn keep_fresh(store: Arc<CertStore>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; TLS files are reloaded when they change");
            None
        }
    };
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
            _ = tick.tick() => {
                if !store.changed() {
                    continue;
                }
                "files changed"
            }
        };
        store.reload_logged(why);
    }
}

/// Loads a client CA file for mutual TLS.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let fail = |detail: String| TlsError::ClientCa { path: path.to_owned(), detail };
    let certs = certificates("client CA", path)?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| fail(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| fail(e.to_string()))
}

/// The TLS settings of the HTTPS listeners: certificate from `store`, client certificates
/// checked against `client_ca` when given (and then required).
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Everything an HTTPS listener needs.
#[derive(Clone)]
pub struct Tls {
    pub store: Arc<CertStore>,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair (and the client CA); the errors name the file.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let store = Arc::new(CertStore::load(cert, key)?);
        let config = server_config(Arc::clone(&store), client_ca)?;
        Ok(Self { store, acceptor: tokio_rustls::TlsAcceptor::from(config) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed ECDSA certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let p = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, &p).expect("rename");
        p
    }

    fn leaf_name(store: &CertStore) -> Vec<u8> {
        store.current().end_entity_cert().expect("leaf").to_vec()
    }

    #[test]
    fn errors_name_the_file_and_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_a, key_a) = pair("a");
        let (_, key_b) = pair("b");
        let cert = write(dir.path(), "a.crt", &cert_a);
        let key = write(dir.path(), "a.key", &key_a);
        let other = write(dir.path(), "b.key", &key_b);
        let empty = write(dir.path(), "empty.pem", "");
        assert!(load_pair(&cert, &key).is_ok());
        let e = load_pair(&cert, &other).expect_err("mismatch").to_string();
        assert!(e.contains("b.key") && e.contains("a.crt") && e.contains("does not belong"), "{e}");
        let e = load_pair(&empty, &key).expect_err("no cert").to_string();
        assert!(e.contains("empty.pem") && e.contains("no certificate"), "{e}");
        let e = load_pair(&cert, &empty).expect_err("no key").to_string();
        assert!(e.contains("empty.pem") && e.contains("no private key"), "{e}");
        let e = load_pair(&dir.path().join("gone.crt"), &key).expect_err("missing").to_string();
        assert!(e.contains("gone.crt"), "{e}");
        // A key file holding a certificate only.
        let e = load_pair(&cert, &cert).expect_err("cert as key").to_string();
        assert!(e.contains("a.crt") && e.contains("no private key"), "{e}");
        let e = server_config(Arc::new(CertStore::load(&cert, &key).expect("load")), Some(&empty))
            .expect_err("empty CA")
            .to_string();
        assert!(e.contains("empty.pem"), "{e}");
        assert!(!e.contains("PRIVATE"), "no key material: {e}");
    }

    #[test]
    fn a_replaced_pair_is_seen_and_a_bad_one_keeps_the_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_a, key_a) = pair("a");
        let cert = write(dir.path(), "tls.crt", &cert_a);
        let key = write(dir.path(), "tls.key", &key_a);
        let store = CertStore::load(&cert, &key).expect("load");
        let first = leaf_name(&store);
        assert!(!store.changed());
        let (cert_b, key_b) = pair("b");
        // Half a renewal: the certificate replaced, the key not yet. Not loaded, old pair kept.
        write(dir.path(), "tls.crt", &cert_b);
        assert!(store.changed(), "a rename over the file is a change");
        assert!(store.reload().is_err());
        assert_eq!(leaf_name(&store), first);
        assert!(!store.changed(), "a failed load is not retried until the files change again");
        write(dir.path(), "tls.key", &key_b);
        assert!(store.changed());
        store.reload().expect("the whole new pair loads");
        assert_ne!(leaf_name(&store), first);
        // The resolver hands new handshakes the new pair.
        let config = server_config(Arc::new(store), None).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}
