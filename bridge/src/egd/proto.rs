//! The EGD wire format: requests a client sends and how each is answered.
//!
//! Every request starts with one command byte (egd.pl 0.9, Brian Warner; the client sides are
//! QEMU `backends/rng-egd.c`, libgcrypt `random/rndegd.c`, OpenSSL `crypto/rand/rand_egd.c`):
//!
//! | command | request | answer |
//! |---|---|---|
//! | `0x00` entropy level | — | 4 bytes, big-endian: bits available |
//! | `0x01` read, non-blocking | 1 byte `n` | 1 byte `k` (≤ `n`), then `k` bytes |
//! | `0x02` read, blocking | 1 byte `n` | exactly `n` bytes, no count byte (what QEMU sends) |
//! | `0x03` write entropy | 2 bytes bits (big-endian), 1 byte `n`, `n` bytes | none |
//! | `0x04` get PID | — | 1 byte `k`, then `k` ASCII digits |
//!
//! Lengths are one byte, so no request asks for more than [`MAX_REQUEST`] bytes. Any other command
//! byte is a protocol error: the connection is closed (there is no error answer in EGD).

/// The most bytes one request can ask for (its length is one byte).
pub const MAX_REQUEST: usize = u8::MAX as usize;

/// The longest request: a write of [`MAX_REQUEST`] bytes (command, 2 bytes bits, length, data).
pub const MAX_FRAME: usize = 4 + MAX_REQUEST;

/// One decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `0x00`: how many bits are available.
    Level,
    /// `0x01 n`: what is ready now, up to `n` bytes, with a count byte.
    ReadNonBlocking(u8),
    /// `0x02 n`: exactly `n` bytes, waiting for them.
    ReadBlocking(u8),
    /// `0x03 bits n data`: a client offering `len` bytes it claims carry `bits` bits. Never mixed
    /// into what the bridge serves (it serves only the card's bytes); the data is skipped.
    Write { bits: u16, len: u8 },
    /// `0x04`: the server's process id.
    Pid,
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, and how many bytes of the buffer it used.
    Request(Request, usize),
    /// The request is not complete yet: read more.
    Incomplete,
    /// Not an EGD command byte: close the connection.
    Unknown(u8),
}

/// Decodes the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(&cmd) = buf.first() else { return Parsed::Incomplete };
    let len_at = |i: usize| buf.get(i).copied();
    match cmd {
        0x00 => Parsed::Request(Request::Level, 1),
        0x01 => len_at(1)
            .map_or(Parsed::Incomplete, |n| Parsed::Request(Request::ReadNonBlocking(n), 2)),
        0x02 => {
            len_at(1).map_or(Parsed::Incomplete, |n| Parsed::Request(Request::ReadBlocking(n), 2))
        }
        0x03 => {
            let (Some(hi), Some(lo), Some(n)) = (len_at(1), len_at(2), len_at(3)) else {
                return Parsed::Incomplete;
            };
            let used = 4 + usize::from(n);
            if buf.len() < used {
                return Parsed::Incomplete;
            }
            Parsed::Request(Request::Write { bits: u16::from_be_bytes([hi, lo]), len: n }, used)
        }
        0x04 => Parsed::Request(Request::Pid, 1),
        other => Parsed::Unknown(other),
    }
}

/// The answer to `0x00`: `bits` as 4 big-endian bytes (saturating at `u32::MAX`).
pub fn level_answer(bits: u64) -> [u8; 4] {
    u32::try_from(bits).unwrap_or(u32::MAX).to_be_bytes()
}

/// The answer to `0x04`: a length byte and the ASCII decimal `pid`.
pub fn pid_answer(pid: u32) -> Vec<u8> {
    let digits = pid.to_string();
    let mut out = Vec::with_capacity(1 + digits.len());
    // A u32 has at most 10 digits: the length always fits a byte.
    out.push(digits.len() as u8);
    out.extend_from_slice(digits.as_bytes());
    out
}

/// The answer to `0x01`: a count byte and the bytes (at most [`MAX_REQUEST`]).
pub fn nonblocking_answer(bytes: &[u8]) -> Vec<u8> {
    let k = bytes.len().min(MAX_REQUEST);
    let mut out = Vec::with_capacity(1 + k);
    out.push(k as u8);
    out.extend_from_slice(&bytes[..k]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_decodes_with_its_length() {
        assert_eq!(parse(&[0x00]), Parsed::Request(Request::Level, 1));
        assert_eq!(parse(&[0x01, 17, 0xff]), Parsed::Request(Request::ReadNonBlocking(17), 2));
        assert_eq!(parse(&[0x02, 255]), Parsed::Request(Request::ReadBlocking(255), 2));
        assert_eq!(parse(&[0x02, 0]), Parsed::Request(Request::ReadBlocking(0), 2));
        assert_eq!(
            parse(&[0x03, 0x01, 0x02, 3, 9, 9, 9, 0x00]),
            Parsed::Request(Request::Write { bits: 0x0102, len: 3 }, 7)
        );
        assert_eq!(parse(&[0x04, 0x00]), Parsed::Request(Request::Pid, 1));
    }

    #[test]
    fn truncated_requests_ask_for_more() {
        for partial in
            [&[][..], &[0x01], &[0x02], &[0x03], &[0x03, 0], &[0x03, 0, 8], &[0x03, 0, 8, 2, 1]]
        {
            assert_eq!(parse(partial), Parsed::Incomplete, "{partial:?}");
        }
        // The longest request fits the frame bound.
        let mut w = vec![0x03, 0xff, 0xff, 255];
        w.extend(std::iter::repeat_n(7, 255));
        assert_eq!(w.len(), MAX_FRAME);
        assert_eq!(
            parse(&w),
            Parsed::Request(Request::Write { bits: 0xffff, len: 255 }, MAX_FRAME)
        );
        assert_eq!(parse(&w[..MAX_FRAME - 1]), Parsed::Incomplete);
    }

    #[test]
    fn unknown_command_bytes_are_refused() {
        for b in 0x05..=0xff_u8 {
            assert_eq!(parse(&[b, 1, 2]), Parsed::Unknown(b));
        }
    }

    #[test]
    fn answers_follow_the_wire_format() {
        assert_eq!(level_answer(2048), [0, 0, 8, 0]);
        assert_eq!(level_answer(u64::MAX), [0xff; 4]);
        assert_eq!(pid_answer(4242), b"\x044242".to_vec());
        assert_eq!(pid_answer(u32::MAX), b"\x0a4294967295".to_vec());
        assert_eq!(nonblocking_answer(&[]), vec![0]);
        assert_eq!(nonblocking_answer(&[5, 6]), vec![2, 5, 6]);
    }
}
