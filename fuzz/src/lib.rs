//! The entry points of the fuzz targets, one module per parser. They are plain functions so the
//! main crate's `tests/fuzz_corpus.rs` can include these same files and replay every committed
//! corpus input on stable Rust: CI exercises them without a nightly toolchain.
//!
//! Each function must never panic on any input; where a parser has a property worth checking
//! (a round trip, a packet it builds being valid), it is asserted too.

pub mod cert;
pub mod config;
pub mod control_socket;
pub mod firewall_packet;
pub mod firewall_rules;
pub mod fixtures;
pub mod mesh;
pub mod mesh_control;
pub mod packet;
