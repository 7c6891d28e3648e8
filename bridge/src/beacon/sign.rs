//! Keys and certificates of cipher suite 0: RSA PKCS#1 v1.5 signatures with SHA-512 (ring), the
//! beacon's X.509 certificate (given, or self-signed with rcgen and kept next to the database),
//! and `certificateId` = SHA-512 of the certificate's DER bytes (as NIST's certificate of 2018
//! shows: SHA-512 of its DER is the `certificateId` of its pulses; fixture in `testdata/`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{self, KeyPair as _, RsaKeyPair};

use super::pulse::sha512;

/// Errors loading keys and certificates, and signature failures.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a PEM RSA private key in PKCS#8 form (\"BEGIN PRIVATE KEY\"): {reason}; \
         make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out {path}`, \
         or convert a PKCS#1 key with `openssl pkcs8 -topk8 -nocrypt -in OLD -out {path}`"
    )]
    Key { path: PathBuf, reason: String },
    #[error("{path} is readable or writable by other users: run `chmod 600 {path}`")]
    KeyMode { path: PathBuf },
    #[error("{what} is not a PEM or DER X.509 certificate: {reason}")]
    Certificate { what: String, reason: String },
    #[error(
        "the certificate {path} does not hold the public key of --beacon-key: give the matching \
         certificate, or leave --beacon-cert out for a self-signed one"
    )]
    CertificateKey { path: PathBuf },
    #[error("the certificate's key is not an RSA key")]
    NotRsa,
    #[error("failed to make the self-signed beacon certificate: {0}")]
    SelfSigned(String),
    #[error("RSA signing failed")]
    Sign,
}

/// The DER bytes of the first PEM block labelled `label` in `text`.
pub fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// PEM text of DER bytes, with CRLF line ends as NIST serves its certificates.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\r\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push_str("\r\n");
    }
    s.push_str(&format!("-----END {label}-----\r\n"));
    s
}

/// A certificate's DER bytes from PEM or DER.
pub fn certificate_der(bytes: &[u8], what: &str) -> Result<Vec<u8>, SignError> {
    let der = match std::str::from_utf8(bytes).ok().and_then(|t| pem_block(t, "CERTIFICATE")) {
        Some(der) => der,
        None => bytes.to_vec(),
    };
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| SignError::Certificate { what: what.to_owned(), reason: e.to_string() })?;
    Ok(der)
}

/// The RSA public key (PKCS#1 `RSAPublicKey` DER) of a certificate.
pub fn certificate_rsa_key(der: &[u8]) -> Result<Vec<u8>, SignError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        SignError::Certificate { what: "the certificate".into(), reason: e.to_string() }
    })?;
    let spki = cert.public_key();
    // rsaEncryption, RFC 8017 appendix A.1.
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
        return Err(SignError::NotRsa);
    }
    Ok(spki.subject_public_key.data.to_vec())
}

/// Checks an RSA PKCS#1 v1.5 SHA-512 signature (2048 to 8192-bit keys) by a certificate's key.
pub fn verify_signature(cert_der: &[u8], message: &[u8], sig: &[u8]) -> Result<bool, SignError> {
    let key = certificate_rsa_key(cert_der)?;
    let key = signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA512, key);
    Ok(key.verify(message, sig).is_ok())
}

/// The beacon's signing key and certificate.
pub struct Signer {
    key: RsaKeyPair,
    rng: ring::rand::SystemRandom,
    cert_der: Vec<u8>,
    cert_id: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("certificate_id", &super::pulse::hex(&self.cert_id, false))
            .finish()
    }
}

/// Where the self-signed certificate is kept: next to the database.
pub fn self_signed_path(db: &Path) -> PathBuf {
    db.with_file_name("beacon-cert.pem")
}

impl Signer {
    /// Loads the key (PKCS#8 PEM, not readable by others) and the certificate: `cert` when given
    /// (it must carry the key's public half), else the self-signed one at `self_signed` (made,
    /// or made anew when it does not match the key).
    pub fn load(
        key_path: &Path,
        cert: Option<&Path>,
        self_signed: &Path,
    ) -> Result<Self, SignError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| SignError::Read { path: p.to_owned(), source })
        };
        let meta = std::fs::metadata(key_path)
            .map_err(|source| SignError::Read { path: key_path.to_owned(), source })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SignError::KeyMode { path: key_path.to_owned() });
        }
        let pem = String::from_utf8(read(key_path)?)
            .map_err(|_| SignError::Key { path: key_path.to_owned(), reason: "not text".into() })?;
        let key_err = |reason: String| SignError::Key { path: key_path.to_owned(), reason };
        let der =
            pem_block(&pem, "PRIVATE KEY").ok_or_else(|| key_err("no PRIVATE KEY block".into()))?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| key_err(e.to_string()))?;
        let public = key.public_key().as_ref().to_vec();
        let cert_der = match cert {
            Some(p) => {
                let der = certificate_der(&read(p)?, &p.display().to_string())?;
                if certificate_rsa_key(&der)? != public {
                    return Err(SignError::CertificateKey { path: p.to_owned() });
                }
                der
            }
            None => Self::self_signed(&pem, &public, self_signed)?,
        };
        let cert_id = sha512(&cert_der);
        Ok(Self { key, rng: ring::rand::SystemRandom::new(), cert_der, cert_id })
    }

    /// The kept self-signed certificate when it carries `public`, else a new one written there.
    fn self_signed(key_pem: &str, public: &[u8], path: &Path) -> Result<Vec<u8>, SignError> {
        if let Ok(bytes) = std::fs::read(path) {
            if let Ok(der) = certificate_der(&bytes, &path.display().to_string()) {
                if certificate_rsa_key(&der).ok().as_deref() == Some(public) {
                    return Ok(der);
                }
                tracing::warn!(path = %path.display(), "the kept beacon certificate is for another key: making a new one (a new chain starts)");
            }
        }
        let err = |e: rcgen::Error| SignError::SelfSigned(e.to_string());
        let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
            .map_err(err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "qrng-bridge randomness beacon");
        let cert = params.self_signed(&pair).map_err(err)?;
        let der = cert.der().to_vec();
        write_private(path, to_pem("CERTIFICATE", &der).as_bytes())?;
        tracing::info!(path = %path.display(), "made a self-signed beacon certificate");
        Ok(der)
    }

    /// The certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.cert_der
    }

    /// `certificateId`: SHA-512 of the certificate's DER bytes.
    pub fn certificate_id(&self) -> &[u8] {
        &self.cert_id
    }

    /// RSA PKCS#1 v1.5 with SHA-512 over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&signature::RSA_PKCS1_SHA512, &self.rng, message, &mut sig)
            .map_err(|_| SignError::Sign)?;
        Ok(sig)
    }
}

/// Writes a file readable by its owner only, through a temporary file and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SignError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| SignError::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
