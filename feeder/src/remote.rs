//! The `https://` source: a remote bridge's `/api/v1/random/bytes` (binary), over rustls, with
//! an optional client certificate (mutual TLS), own CA certificates and a bearer token.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::source::{Source, SourceError};

/// How to reach a remote bridge.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Client certificate chain (PEM) and its key (PEM), for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// CA certificates (PEM) to verify the server with; default: Mozilla's roots (webpki-roots).
    pub ca: Option<PathBuf>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Bound on one request, connect to last byte.
    pub timeout: Duration,
}

/// A remote bridge.
pub struct RemoteSource {
    url: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("RemoteSource").field("url", &self.url).finish_non_exhaustive()
    }
}

fn err(url: &str, message: impl Into<String>) -> SourceError {
    SourceError::Remote { url: url.to_owned(), message: message.into() }
}

/// Reads a file that carries a secret; refuses one the group or others can read (the fix named).
fn read_secret(url: &str, path: &Path, what: &str) -> Result<Vec<u8>, SourceError> {
    let meta = fs::metadata(path)
        .map_err(|e| err(url, format!("cannot read the {what} {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err(
            url,
            format!(
                "the {what} {} is readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    fs::read(path).map_err(|e| err(url, format!("cannot read the {what} {}: {e}", path.display())))
}

fn certificates(url: &str, path: &Path) -> Result<Vec<Certificate<'static>>, SourceError> {
    let pem = fs::read(path)
        .map_err(|e| err(url, format!("cannot read certificates {}: {e}", path.display())))?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        // Keys and other sections in the file are skipped.
        if let PemItem::Certificate(c) =
            item.map_err(|e| err(url, format!("{}: {e}", path.display())))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(err(url, format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

impl RemoteSource {
    /// `url` is the bridge's base (`https://host:port`).
    pub fn new(url: &str, opts: &RemoteOptions) -> Result<Self, SourceError> {
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &opts.ca {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certificates(url, ca)?)));
        }
        if let Some((cert, key)) = &opts.client {
            let chain = certificates(url, cert)?;
            let key_pem = read_secret(url, key, "client key")?;
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|e| err(url, format!("{}: {e}", key.display())))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let token = match &opts.token_file {
            Some(p) => {
                let t = String::from_utf8(read_secret(url, p, "token file")?).map_err(|_| {
                    err(url, format!("the token file {} is not UTF-8", p.display()))
                })?;
                let t = t.trim().to_owned();
                if t.is_empty() {
                    return Err(err(url, format!("the token file {} is empty", p.display())));
                }
                Some(t)
            }
            None => None,
        };
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Self { url: url.to_owned(), agent, token })
    }
}

impl Source for RemoteSource {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SourceError> {
        let target = format!("{}/api/v1/random/bytes?length={}&format=binary", self.url, buf.len());
        let mut req = self.agent.get(&target);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| err(&self.url, e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(err(&self.url, format!("HTTP {status}")));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(buf.len() as u64 + 1)
            .read_to_vec()
            .map_err(|e| err(&self.url, e.to_string()))?;
        if body.len() != buf.len() {
            return Err(err(&self.url, format!("{} bytes, asked for {}", body.len(), buf.len())));
        }
        buf.copy_from_slice(&body);
        Ok(())
    }
}
