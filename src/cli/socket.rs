//! How `status`, `members` and `reload` find the daemon: `--socket PATH|@NAME`, or the
//! control socket of `-c CONFIG` (read from `control.socket` and `tun.dev` alone, so a config
//! broken since the start still finds its daemon), or that of the daemon owning `nebula1`.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::ControlAddr;

#[derive(clap::Args)]
pub struct Target {
    /// The daemon's config (its control.socket, or tun.dev's default socket, is used).
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR", conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// The daemon's control socket: a path, or @NAME for an abstract socket.
    #[arg(long, value_name = "PATH|@NAME")]
    socket: Option<PathBuf>,
}

impl Target {
    pub fn addr(&self) -> Result<ControlAddr> {
        Ok(match (&self.socket, &self.config) {
            (Some(s), _) => ControlAddr::from(s.clone()),
            (None, Some(c)) => crate::config::control_addr_of(c)?,
            (None, None) => ControlAddr::for_tun("nebula1"),
        })
    }
}
