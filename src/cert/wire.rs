//! The Nebula v1 certificate schema (`cert/cert.proto` of Nebula 1.6.1), as prost messages.
//!
//! The outer `Details` field is declared as `bytes`: an embedded message is wire-identical to a
//! length-delimited byte string, so the signature can be checked over exactly the bytes received.

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawCertificate {
    #[prost(bytes = "vec", tag = "1")]
    pub details: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawDetails {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Packed pairs `[ip, mask]`, big-endian u32 each.
    #[prost(uint32, repeated, tag = "2")]
    pub ips: Vec<u32>,
    #[prost(uint32, repeated, tag = "3")]
    pub subnets: Vec<u32>,
    #[prost(string, repeated, tag = "4")]
    pub groups: Vec<String>,
    #[prost(int64, tag = "5")]
    pub not_before: i64,
    #[prost(int64, tag = "6")]
    pub not_after: i64,
    #[prost(bytes = "vec", tag = "7")]
    pub public_key: Vec<u8>,
    #[prost(bool, tag = "8")]
    pub is_ca: bool,
    #[prost(bytes = "vec", tag = "9")]
    pub issuer: Vec<u8>,
    /// Added in Nebula 1.7 (0 = Curve25519, 1 = P-256); omitted when 0, so 25519 certificates
    /// stay byte-identical to 1.6.1 ones.
    #[prost(int32, tag = "100")]
    pub curve: i32,
}
