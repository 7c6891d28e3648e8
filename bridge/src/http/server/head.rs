//! A connection's first request head, read before hyper is given the connection.
//!
//! Until its head is complete a connection holds only the bytes it sent, in a buffer that grows
//! with them up to the head limit (`ConnLimits::max_header_bytes`), and its task: no hyper
//! connection with its 8 KiB read and write buffers yet. Clients that open connections and send
//! half a request (slowloris) then cost a few hundred bytes each instead of tens of kilobytes
//! (figures: docs/api.md "Connections"). The header timeout bounds this phase in time; [`Prefixed`]
//! hands the bytes read here to hyper ahead of the socket's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bytes taken from the socket per read, into a buffer on the stack: what arrived is then kept
/// in a buffer of its own size, so a client holds memory for what it sent, not for what it might.
const READ_CHUNK: usize = 2048;

/// Finds the end of a request head: an empty line (CRLF CRLF, or bare LF as RFC 9112 §2.2 lets
/// a server accept) after something other than the empty lines a client may send before the
/// request line (RFC 9112 §2.2).
#[derive(Debug, Default)]
struct HeadEnd {
    /// Bytes looked at so far.
    seen: usize,
    /// A byte other than CR or LF was seen.
    started: bool,
    /// The bytes since the last LF, if only CRs: 0 right after an LF, 1 after LF CR.
    after_lf: Option<u8>,
}

impl HeadEnd {
    /// Looks at the bytes of `buf` not looked at yet; true once the head is complete.
    fn complete(&mut self, buf: &[u8]) -> bool {
        for &b in &buf[self.seen..] {
            self.seen += 1;
            if !self.started {
                self.started = b != b'\r' && b != b'\n';
                continue;
            }
            self.after_lf = match (b, self.after_lf) {
                (b'\n', Some(_)) => return true,
                (b'\n', None) => Some(0),
                (b'\r', Some(0)) => Some(1),
                _ => None,
            };
        }
        false
    }
}

/// A socket read without a buffer of its own until data is there (TCP and Unix streams).
pub(super) trait Socket {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
}

impl Socket for tokio::net::UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::UnixStream::poll_read_ready(self, cx)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::net::UnixStream::try_read(self, buf)
    }
}

/// The head read so far.
#[derive(Debug, Default)]
struct Head {
    buf: Vec<u8>,
    end: HeadEnd,
}

impl Head {
    /// Bytes to read next at most: never past the limit (+1 so hyper sees it crossed and
    /// answers 431).
    fn room(&self, max: usize) -> usize {
        READ_CHUNK.min(max + 1 - self.buf.len())
    }

    /// Keeps `chunk`; true once the head is complete or over `max`.
    fn push(&mut self, chunk: &[u8], max: usize) -> bool {
        let n = chunk.len();
        if self.buf.capacity() - self.buf.len() < n {
            // Doubling, but never past the limit.
            self.buf.reserve_exact(n.max(self.buf.len()).min(max + 1 - self.buf.len()));
        }
        self.buf.extend_from_slice(chunk);
        self.end.complete(&self.buf) || self.buf.len() > max
    }
}

/// Reads from `stream` until the first request head is complete, or `max` bytes are in (hyper
/// then answers 431), and returns the bytes. None if the client closed first.
pub(super) async fn first_head<S: Socket>(stream: &S, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut head = Head::default();
    loop {
        std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await?;
        let mut chunk = [0u8; READ_CHUNK];
        let room = head.room(max);
        match stream.try_read(&mut chunk[..room]) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                if head.push(&chunk[..n], max) {
                    return Ok(Some(head.buf));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`first_head`] from a stream that decrypts (TLS): its reads go through its own buffer anyway.
pub(super) async fn first_head_from<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Head::default();
    loop {
        let mut chunk = [0u8; READ_CHUNK];
        let room = head.room(max);
        match stream.read(&mut chunk[..room]).await? {
            0 => return Ok(None),
            n => {
                if head.push(&chunk[..n], max) {
                    return Ok(Some(head.buf));
                }
            }
        }
    }
}

/// A connection whose first bytes were already read: hyper reads those, then the socket.
#[derive(Debug)]
pub(super) struct Prefixed<I> {
    head: Vec<u8>,
    at: usize,
    io: TokioIo<I>,
}

impl<I> Prefixed<I> {
    pub(super) fn new(head: Vec<u8>, stream: I) -> Self {
        Self { head, at: 0, io: TokioIo::new(stream) }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> Read for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.at);
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            if this.at == this.head.len() {
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> Write for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete_at(input: &[u8], step: usize) -> Option<usize> {
        let mut end = HeadEnd::default();
        (step..=input.len()).step_by(step).chain([input.len()]).find(|&n| end.complete(&input[..n]))
    }

    #[test]
    fn a_head_ends_at_its_empty_line_however_it_arrives() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        for step in 1..8 {
            let at = complete_at(req, step).expect("complete");
            assert!(at >= 27 && at < 27 + step, "step {step}: {at}");
        }
        assert!(complete_at(b"GET / HTTP/1.1\nHost: x\n\n", 1).is_some(), "bare LF");
        assert!(complete_at(b"GET / HTTP/1.1\r\nHost: x\r\n", 1).is_none(), "half-sent");
        // Empty lines before the request line do not end it.
        assert!(complete_at(b"\r\n\r\n\r\nGET / HTTP/1.1\r\n", 1).is_none());
        assert!(complete_at(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 1).is_some());
        // A CR inside a line is not an empty line.
        assert!(complete_at(b"GET / HTTP/1.1\r\nA: \r\rb\r\n", 1).is_none());
    }

    #[tokio::test]
    async fn the_first_head_is_read_in_pieces_and_bounded() {
        use tokio::io::AsyncWriteExt as _;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        let reader = tokio::spawn(async move { first_head(&s, 64).await });
        for piece in [&b"GET / HT"[..], b"TP/1.1\r\nHost: x\r", b"\n\r\n"] {
            c.write_all(piece).await.expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let head = reader.await.expect("join").expect("read").expect("head");
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");

        // Over the limit: the bytes are handed on (for hyper's 431) once past it, no more.
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        c.write_all(&[b'a'; 200]).await.expect("write");
        let head = first_head(&s, 64).await.expect("read").expect("head");
        assert_eq!(head.len(), 65);
        assert_eq!(head.capacity(), 65, "buffer bounded by the limit");

        // The client leaves mid-head.
        let c = TcpStream::connect(l.local_addr().expect("addr")).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        drop(c);
        assert!(first_head(&s, 64).await.expect("read").is_none());
    }
}
