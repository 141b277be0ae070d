//! The DER layer of Nebula v2 certificates (`cert/cert_v2.asn1` of Nebula 1.10+): bytes to raw
//! fields and back, with no judgement about what the fields mean (that is [`super::v2`]).
//!
//! The `der` crate reads and writes every element: it refuses indefinite and non-minimal
//! lengths, non-minimal integers, booleans other than 0x00/0xFF and invalid UTF-8. The walk over
//! the fields is written here because every field of Nebula's schema carries an implicit
//! context-specific tag (`[0]`..`[7]`), which `der`'s derive macros do not express for an
//! implicitly tagged SEQUENCE whose raw bytes must also be kept for the signature.
//!
//! ```text
//! Certificate ::= SEQUENCE { details [0] Details, curve [1] one byte DEFAULT 0,
//!                            publicKey [2] OCTET STRING, signature [3] OCTET STRING }
//! Details ::= [0] SEQUENCE { name [0] UTF8, networks [1] SEQUENCE OF OCTET STRING OPTIONAL,
//!     unsafeNetworks [2] (same) OPTIONAL, groups [3] SEQUENCE OF UTF8String OPTIONAL,
//!     isCA [4] BOOLEAN DEFAULT FALSE, notBefore [5] INTEGER, notAfter [6] INTEGER,
//!     issuer [7] OCTET STRING OPTIONAL }
//! ```
//! A network is the address (4 or 16 bytes) followed by one prefix-length byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use der::asn1::AnyRef;
use der::{Decode, Encode, Header, Reader, SliceReader, Tag, TagNumber, Tagged};
use ipnet::IpNet;

/// The fields of a Details element, as encoded (networks in encoded order, issuer any length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDetails {
    pub name: String,
    pub networks: Vec<IpNet>,
    pub unsafe_networks: Vec<IpNet>,
    pub groups: Vec<String>,
    pub is_ca: bool,
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: Option<Vec<u8>>,
}

/// The four parts of a Certificate element. `details` is the whole `[0]` element, tag and length
/// included: the signature and the fingerprint are computed over exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCertificate<'a> {
    pub details: &'a [u8],
    pub curve: u8,
    pub public_key: &'a [u8],
    pub signature: &'a [u8],
}

/// Why bytes are not a v2 certificate, naming the element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element}: {reason}")]
pub struct DerError {
    pub element: &'static str,
    pub reason: String,
}

fn err(element: &'static str, reason: impl ToString) -> DerError {
    DerError { element, reason: reason.to_string() }
}

fn ctx(number: u8, constructed: bool) -> Tag {
    Tag::ContextSpecific { constructed, number: TagNumber::new(number) }
}

/// Reads the next element if it carries `tag`; leaves the reader alone otherwise.
fn optional<'a>(r: &mut SliceReader<'a>, tag: Tag, element: &'static str) -> Result<Option<AnyRef<'a>>, DerError> {
    if r.is_finished() || r.peek_tag().map_err(|e| err(element, e))? != tag {
        return Ok(None);
    }
    AnyRef::decode(r).map(Some).map_err(|e| err(element, e))
}

fn required<'a>(r: &mut SliceReader<'a>, tag: Tag, element: &'static str) -> Result<AnyRef<'a>, DerError> {
    optional(r, tag, element)?.ok_or_else(|| err(element, "missing (or fields out of order)"))
}

fn reader<'a>(bytes: &'a [u8], element: &'static str) -> Result<SliceReader<'a>, DerError> {
    SliceReader::new(bytes).map_err(|e| err(element, e))
}

fn finish(r: SliceReader<'_>, element: &'static str) -> Result<(), DerError> {
    if r.is_finished() { Ok(()) } else { Err(err(element, "carries elements after its last known field")) }
}

/// Splits a Certificate element into its parts. Nothing after the element is allowed.
pub fn decode_certificate(bytes: &[u8]) -> Result<RawCertificate<'_>, DerError> {
    let mut outer = reader(bytes, "certificate")?;
    let seq = required(&mut outer, Tag::Sequence, "certificate")?;
    finish(outer, "certificate")?;
    let body = seq.value();
    let mut r = reader(body, "certificate")?;
    let start = usize::try_from(r.position()).map_err(|e| err("details", e))?;
    required(&mut r, ctx(0, true), "details")?;
    let end = usize::try_from(r.position()).map_err(|e| err("details", e))?;
    let details = &body[start..end];
    let curve = match optional(&mut r, ctx(1, false), "curve")? {
        None => 0,
        Some(c) => match c.value() {
            [b] => *b,
            v => return Err(err("curve", format!("is {} bytes, expected one", v.len()))),
        },
    };
    let public_key = required(&mut r, ctx(2, false), "public key")?.value();
    let signature = required(&mut r, ctx(3, false), "signature")?.value();
    finish(r, "certificate")?;
    Ok(RawCertificate { details, curve, public_key, signature })
}

/// Decodes a whole Details element (`[0]` tag and length included).
pub fn decode_details(element: &[u8]) -> Result<RawDetails, DerError> {
    let mut outer = reader(element, "details")?;
    let d = required(&mut outer, ctx(0, true), "details")?;
    finish(outer, "details")?;
    let mut r = reader(d.value(), "details")?;
    let name = required(&mut r, ctx(0, false), "name")?;
    let name = String::from_utf8(name.value().to_vec()).map_err(|_| err("name", "is not UTF-8"))?;
    let networks = network_list(optional(&mut r, ctx(1, true), "networks")?, "networks")?;
    let unsafe_networks = network_list(optional(&mut r, ctx(2, true), "unsafe networks")?, "unsafe networks")?;
    let mut groups = Vec::new();
    if let Some(g) = optional(&mut r, ctx(3, true), "groups")? {
        let mut items = reader(g.value(), "groups")?;
        while !items.is_finished() {
            let item = AnyRef::decode(&mut items).map_err(|e| err("groups", e))?;
            let s: der::asn1::Utf8StringRef<'_> = item.decode_as().map_err(|e| err("groups", e))?;
            groups.push(s.as_str().to_string());
        }
    }
    let is_ca = match optional(&mut r, ctx(4, false), "is-CA")? {
        None => false,
        Some(b) => {
            AnyRef::new(Tag::Boolean, b.value()).and_then(|a| a.decode_as::<bool>()).map_err(|e| err("is-CA", e))?
        }
    };
    let not_before = integer(required(&mut r, ctx(5, false), "not-before")?, "not-before")?;
    let not_after = integer(required(&mut r, ctx(6, false), "not-after")?, "not-after")?;
    let issuer = optional(&mut r, ctx(7, false), "issuer")?.map(|i| i.value().to_vec());
    finish(r, "details")?;
    Ok(RawDetails { name, networks, unsafe_networks, groups, is_ca, not_before, not_after, issuer })
}

fn network_list(list: Option<AnyRef<'_>>, element: &'static str) -> Result<Vec<IpNet>, DerError> {
    let Some(list) = list else { return Ok(Vec::new()) };
    let mut r = reader(list.value(), element)?;
    let mut out = Vec::new();
    while !r.is_finished() {
        let item = AnyRef::decode(&mut r).map_err(|e| err(element, e))?;
        if item.tag() != Tag::OctetString {
            return Err(err(element, format!("holds a {} where an OCTET STRING belongs", item.tag())));
        }
        out.push(network_from_bytes(item.value()).map_err(|reason| err(element, reason))?);
    }
    Ok(out)
}

fn integer(a: AnyRef<'_>, element: &'static str) -> Result<i64, DerError> {
    AnyRef::new(Tag::Integer, a.value()).and_then(|i| i.decode_as::<i64>()).map_err(|e| err(element, e))
}

/// A network as Go's `netip.Prefix.MarshalBinary` writes it: address bytes, then the prefix length.
pub fn network_from_bytes(b: &[u8]) -> Result<IpNet, String> {
    let (addr, bits) = match b {
        [a @ .., bits] if a.len() == 4 => {
            (IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).unwrap_or_default())), *bits)
        }
        [a @ .., bits] if a.len() == 16 => {
            (IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap_or_default())), *bits)
        }
        _ => return Err(format!("a network is {} bytes, expected 5 (IPv4) or 17 (IPv6)", b.len())),
    };
    IpNet::new(addr, bits).map_err(|_| format!("prefix length /{bits} is too long for {addr}"))
}

pub fn network_to_bytes(n: &IpNet) -> Vec<u8> {
    let mut out = match n.addr() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    out.push(n.prefix_len());
    out
}

fn put(out: &mut Vec<u8>, tag: Tag, value: &[u8]) -> Result<(), DerError> {
    Header::new(tag, value.len()).and_then(|h| h.encode_to_vec(out)).map_err(|e| err("encoding", e))?;
    out.extend_from_slice(value);
    Ok(())
}

fn put_networks(out: &mut Vec<u8>, number: u8, nets: &[IpNet]) -> Result<(), DerError> {
    if nets.is_empty() {
        return Ok(());
    }
    let mut list = Vec::new();
    for n in nets {
        put(&mut list, Tag::OctetString, &network_to_bytes(n))?;
    }
    put(out, ctx(number, true), &list)
}

fn put_integer(out: &mut Vec<u8>, number: u8, n: i64) -> Result<(), DerError> {
    let any = der::Any::encode_from(&n).map_err(|e| err("encoding", e))?;
    put(out, ctx(number, false), any.value())
}

/// Encodes a Details element the way Nebula's `detailsV2.Marshal` does: fields in tag order,
/// empty lists and a false is-CA left out, the name always present.
pub fn encode_details(d: &RawDetails) -> Result<Vec<u8>, DerError> {
    let mut body = Vec::new();
    put(&mut body, ctx(0, false), d.name.as_bytes())?;
    put_networks(&mut body, 1, &d.networks)?;
    put_networks(&mut body, 2, &d.unsafe_networks)?;
    if !d.groups.is_empty() {
        let mut list = Vec::new();
        for g in &d.groups {
            put(&mut list, Tag::Utf8String, g.as_bytes())?;
        }
        put(&mut body, ctx(3, true), &list)?;
    }
    if d.is_ca {
        put(&mut body, ctx(4, false), &[0xff])?;
    }
    put_integer(&mut body, 5, d.not_before)?;
    put_integer(&mut body, 6, d.not_after)?;
    if let Some(issuer) = &d.issuer {
        put(&mut body, ctx(7, false), issuer)?;
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    put(&mut out, ctx(0, true), &body)?;
    Ok(out)
}

/// Encodes a Certificate element around an already encoded Details element (Nebula's `Marshal`):
/// the curve only when it is not Curve25519 (0).
pub fn encode_certificate(c: &RawCertificate<'_>) -> Result<Vec<u8>, DerError> {
    let mut body = c.details.to_vec();
    if c.curve != 0 {
        put(&mut body, ctx(1, false), &[c.curve])?;
    }
    put(&mut body, ctx(2, false), c.public_key)?;
    put(&mut body, ctx(3, false), c.signature)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    put(&mut out, Tag::Sequence, &body)?;
    Ok(out)
}
