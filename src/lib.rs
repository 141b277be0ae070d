//! cos-mesh: an overlay mesh in the style of Nebula for Nomad clusters that span environments.
//!
//! The pure modules (`cert`, `duration`, `unixtime`) do no IO and read no clock; the CLI and the
//! daemon's IO shell pass time and bytes in.

// Library code reports errors; only tests may unwrap (clippy.toml: allow-unwrap-in-tests).
#![warn(clippy::unwrap_used)]

/// This build's identity (a hash of its sources, build.rs): `cos-mesh run` hands over to a
/// `cos-mesh-daemon` only of the same build.
pub const BUILD_ID: &str = env!("COS_MESH_BUILD_ID");

pub mod cert;
pub mod cli;
pub mod config;
pub mod consul;
pub mod daemon;
pub mod demo;
pub mod dns;
pub mod duration;
pub mod files;
pub mod firewall;
pub mod inventory;
pub mod io;
pub mod lab;
pub mod mesh;
pub mod nomad;
pub mod packet;
pub mod unixtime;
