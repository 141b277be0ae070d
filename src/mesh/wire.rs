//! Datagram classification and cos-mesh's own control messages on the underlay.
//!
//! WireGuard messages (types 1–4, a little-endian u32 whose upper three bytes are zero) pass to
//! boringtun unchanged. cos-mesh's messages start with a byte of 0x80 or more, so the two can
//! never be confused, followed by a version byte.
//!
//! - `Hello` carries the sender's certificate and asks for the receiver's. It is padded to
//!   [`HELLO_MIN_LEN`] and a `HelloReply` is only sent when it is no larger than the Hello that
//!   caused it, so a spoofed Hello cannot be used for amplification.
//! - `UnknownIndex` tells a sender that its session index is unknown here (the receiver
//!   restarted); it is smaller than the data packet that caused it.

use thiserror::Error;

pub const VERSION: u8 = 1;
pub const HELLO_MIN_LEN: usize = 1200;
const HEADER_LEN: usize = 14;

const TYPE_HELLO: u8 = 0x80;
const TYPE_HELLO_REPLY: u8 = 0x81;
const TYPE_UNKNOWN_INDEX: u8 = 0x82;
/// A one-byte datagram sent only to open NAT mappings (Nebula sends one byte too).
pub const PUNCH: [u8; 1] = [0x83];

/// What a datagram is, decided from its first bytes without any cryptography.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A WireGuard message for boringtun; `receiver` is the receiver index for types 2–4.
    WireGuard {
        msg_type: WgType,
        receiver: Option<u32>,
    },
    Hello {
        id: u64,
        cert: &'a [u8],
    },
    HelloReply {
        id: u64,
        cert: &'a [u8],
    },
    UnknownIndex {
        index: u32,
    },
    /// A NAT-opening punch: nothing to do.
    Punch,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("unsupported cos-mesh message version {0}")]
    Version(u8),
    #[error("truncated {0} message")]
    Truncated(&'static str),
    #[error("{0} message has the wrong length")]
    Length(&'static str),
}

/// WireGuard's message types (the first byte; the next three are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WgType {
    HandshakeInit = 1,
    HandshakeResponse = 2,
    CookieReply = 3,
    Data = 4,
}

impl WgType {
    /// The type of a WireGuard datagram (only the first four bytes are looked at).
    pub fn of(d: &[u8]) -> Option<WgType> {
        if d.len() < 4 || d[1..4] != [0, 0, 0] {
            return None;
        }
        match d[0] {
            1 => Some(WgType::HandshakeInit),
            2 => Some(WgType::HandshakeResponse),
            3 => Some(WgType::CookieReply),
            4 => Some(WgType::Data),
            _ => None,
        }
    }

    /// Whether `d` has this type.
    pub fn is(self, d: &[u8]) -> bool {
        WgType::of(d) == Some(self)
    }
}

/// Whether `d` is a whole handshake initiation (boringtun hands us one when a session is needed).
pub fn is_handshake_init(d: &[u8]) -> bool {
    d.len() == WG_INIT_LEN && WgType::HandshakeInit.is(d)
}

/// The buffer boringtun needs to encrypt a packet of `len` bytes (or to write an initiation
/// in its place).
pub fn encapsulate_len(len: usize) -> usize {
    (len + WG_DATA_OVERHEAD).max(WG_INIT_LEN)
}

/// WireGuard message sizes (boringtun `noise/mod.rs`).
pub const WG_INIT_LEN: usize = 148;
const WG_RESPONSE_LEN: usize = 92;
const WG_COOKIE_LEN: usize = 64;
const WG_DATA_MIN_LEN: usize = 32;
/// What WireGuard adds to a packet it encrypts (header and tag).
pub const WG_DATA_OVERHEAD: usize = 32;

/// The sender index of a handshake initiation or response (bytes 4..8), `None` for anything
/// shorter. boringtun keeps its upper 24 bits for every handshake of one session object.
pub fn sender_index(d: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(4..8)?.try_into().ok()?))
}

pub fn classify(d: &[u8]) -> Result<Kind<'_>, WireError> {
    let first = *d.first().ok_or(WireError::Empty)?;
    match first {
        1..=4 => {
            let msg_type = WgType::of(d).ok_or(WireError::UnknownType(first))?;
            let ok_len = match msg_type {
                WgType::HandshakeInit => d.len() == WG_INIT_LEN,
                WgType::HandshakeResponse => d.len() == WG_RESPONSE_LEN,
                WgType::CookieReply => d.len() == WG_COOKIE_LEN,
                WgType::Data => d.len() >= WG_DATA_MIN_LEN,
            };
            if !ok_len {
                return Err(WireError::Length("WireGuard"));
            }
            // Types 2–4 carry the receiver index at bytes 4..8 (type 2 at 8..12: sender first).
            let receiver = match msg_type {
                WgType::HandshakeResponse => Some(u32::from_le_bytes(d[8..12].try_into().unwrap_or_default())),
                WgType::CookieReply | WgType::Data => Some(u32::from_le_bytes(d[4..8].try_into().unwrap_or_default())),
                WgType::HandshakeInit => None,
            };
            Ok(Kind::WireGuard { msg_type, receiver })
        }
        TYPE_HELLO | TYPE_HELLO_REPLY => {
            let what = if first == TYPE_HELLO { "hello" } else { "hello reply" };
            if d.len() < HEADER_LEN {
                return Err(WireError::Truncated(what));
            }
            if d[1] != VERSION {
                return Err(WireError::Version(d[1]));
            }
            let id = u64::from_be_bytes(d[4..12].try_into().unwrap_or_default());
            let len = usize::from(u16::from_be_bytes([d[12], d[13]]));
            let cert = d.get(HEADER_LEN..HEADER_LEN + len).ok_or(WireError::Truncated(what))?;
            if first == TYPE_HELLO && d.len() < HELLO_MIN_LEN {
                return Err(WireError::Length(what));
            }
            Ok(if first == TYPE_HELLO { Kind::Hello { id, cert } } else { Kind::HelloReply { id, cert } })
        }
        TYPE_UNKNOWN_INDEX => {
            if d.len() != 8 {
                return Err(WireError::Length("unknown-index"));
            }
            if d[1] != VERSION {
                return Err(WireError::Version(d[1]));
            }
            Ok(Kind::UnknownIndex { index: u32::from_le_bytes(d[4..8].try_into().unwrap_or_default()) })
        }
        0x83 if d.len() == 1 => Ok(Kind::Punch),
        other => Err(WireError::UnknownType(other)),
    }
}

fn header(kind: u8, id: u64, cert: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HELLO_MIN_LEN.max(HEADER_LEN + cert.len()));
    v.extend_from_slice(&[kind, VERSION, 0, 0]);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(cert.len() as u16).to_be_bytes());
    v.extend_from_slice(cert);
    v
}

/// A Hello with our certificate, padded against amplification.
pub fn hello(id: u64, cert: &[u8]) -> Vec<u8> {
    let mut v = header(TYPE_HELLO, id, cert);
    if v.len() < HELLO_MIN_LEN {
        v.resize(HELLO_MIN_LEN, 0);
    }
    v
}

/// The reply to a Hello of `request_len` bytes, or `None` if it would be larger.
pub fn hello_reply(id: u64, cert: &[u8], request_len: usize) -> Option<Vec<u8>> {
    let v = header(TYPE_HELLO_REPLY, id, cert);
    (v.len() <= request_len).then_some(v)
}

pub fn unknown_index(index: u32) -> [u8; 8] {
    let i = index.to_le_bytes();
    [TYPE_UNKNOWN_INDEX, VERSION, 0, 0, i[0], i[1], i[2], i[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let h = hello(7, b"cert");
        assert_eq!(h.len(), HELLO_MIN_LEN);
        assert_eq!(classify(&h), Ok(Kind::Hello { id: 7, cert: b"cert" }));
        let r = hello_reply(7, b"mine", h.len()).unwrap();
        assert_eq!(classify(&r), Ok(Kind::HelloReply { id: 7, cert: b"mine" }));
        assert!(hello_reply(7, &[0; 2000], h.len()).is_none(), "never amplify");
        assert_eq!(classify(&unknown_index(0xabcd01)), Ok(Kind::UnknownIndex { index: 0xabcd01 }));
    }

    #[test]
    fn rejects_malformed() {
        let mut short_hello = hello(1, b"c");
        short_hello.truncate(100);
        let mut lying_len = hello(1, b"c");
        lying_len[12] = 0xff;
        let mut bad_version = hello(1, b"c");
        bad_version[1] = 9;
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (vec![], WireError::Empty),
            (vec![0], WireError::UnknownType(0)),
            (vec![5, 0, 0, 0], WireError::UnknownType(5)),
            (vec![1, 1, 0, 0], WireError::UnknownType(1)),
            (vec![1, 0, 0, 0, 9], WireError::Length("WireGuard")),
            (vec![4, 0, 0, 0, 1, 2, 3, 4], WireError::Length("WireGuard")),
            (vec![0x80, 1, 0], WireError::Truncated("hello")),
            (short_hello, WireError::Length("hello")),
            (lying_len, WireError::Truncated("hello")),
            (bad_version, WireError::Version(9)),
            (vec![0x82, 1, 0, 0], WireError::Length("unknown-index")),
            (vec![0xff; 10], WireError::UnknownType(0xff)),
        ];
        for (input, want) in cases {
            assert_eq!(classify(&input), Err(want), "{input:?}");
        }
    }
}
