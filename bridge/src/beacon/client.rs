//! A minimal HTTP/1.1 client for the verifier: `GET` over plain TCP (`http://` URLs only; put a
//! TLS beacon behind `curl` and verify the saved database instead, or give `--db`), one request
//! per connection, bodies of at most [`BODY_MAX`] bytes.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use super::pulse::{hex, Envelope, Pulse};
use super::verify::{Source, VerifyError};

/// Largest response body read (a pulse is about 3 KiB, a certificate a few).
pub const BODY_MAX: usize = 1 << 20;
/// Connect, read and write timeout of each request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A beacon served over HTTP at `base` (e.g. `http://127.0.0.1:8080`).
#[derive(Debug, Clone)]
pub struct HttpSource {
    host: String,
    authority: String,
    prefix: String,
}

fn src_err(e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Source(e.to_string())
}

impl HttpSource {
    pub fn new(base: &str) -> Result<Self, VerifyError> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| src_err(format!("{base}: only http:// URLs are supported")))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(src_err(format!("{base}: no host")));
        }
        let host = if authority.starts_with('[')
            || authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self { host, authority: authority.to_owned(), prefix: prefix.to_owned() })
    }

    /// GETs `path`: Some(body) on 200, None on 404.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>, VerifyError> {
        let url = format!("http://{}{}{path}", self.authority, self.prefix);
        let e =
            |what: &str, err: &dyn std::fmt::Display| src_err(format!("GET {url}: {what}: {err}"));
        let addr = self
            .host
            .to_socket_addrs()
            .map_err(|err| e("resolve", &err))?
            .next()
            .ok_or_else(|| src_err(format!("GET {url}: no address")))?;
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|err| e("connect", &err))?;
        s.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
            .map_err(|err| e("socket", &err))?;
        let req = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.prefix, self.authority
        );
        s.write_all(req.as_bytes()).map_err(|err| e("send", &err))?;
        let mut raw = Vec::new();
        s.take((BODY_MAX + 16 * 1024) as u64)
            .read_to_end(&mut raw)
            .map_err(|err| e("read", &err))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| src_err(format!("GET {url}: no response head")))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let body = &raw[split + 4..];
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| src_err(format!("GET {url}: bad status line")))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(body).ok_or_else(|| src_err(format!("GET {url}: bad chunked body")))?
        } else {
            body.to_vec()
        };
        match code {
            200 => Ok(Some(body)),
            404 => Ok(None),
            c => Err(src_err(format!("GET {url}: HTTP {c}"))),
        }
    }

    fn get_pulse(&self, path: &str) -> Result<Option<Pulse>, VerifyError> {
        self.get(path)?
            .map(|b| serde_json::from_slice::<Envelope>(&b).map(|e| e.pulse))
            .transpose()
            .map_err(|err| src_err(format!("{path}: not a pulse: {err}")))
    }
}

/// The body of a chunked transfer coding.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

impl Source for HttpSource {
    fn pulse(&mut self, chain: u64, index: u64) -> Result<Option<Pulse>, VerifyError> {
        self.get_pulse(&super::pulse::pulse_path(chain, index))
    }

    fn last(&mut self, chain: Option<u64>) -> Result<Option<Pulse>, VerifyError> {
        match chain {
            Some(c) => self.get_pulse(&format!("/beacon/2.0/chain/{c}/pulse/last")),
            None => self.get_pulse("/beacon/2.0/pulse/last"),
        }
    }

    fn certificate(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, VerifyError> {
        self.get(&format!("/beacon/2.0/certificate/{}", hex(id, false)))
    }
}
