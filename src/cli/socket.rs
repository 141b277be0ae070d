//! How `status`, `members` and `reload` find the daemon: `--socket PATH`, or the
//! control socket of `-c CONFIG`, or that of the daemon owning `nebula1`.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Target {
    /// The daemon's config (its control.socket is used).
    #[arg(short = 'c', long = "config", value_name = "FILE|DIR", conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl Target {
    pub fn path(&self) -> Result<PathBuf> {
        Ok(match (&self.socket, &self.config) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => Config::load(c)?.config.control_socket(),
            (None, None) => crate::config::default_control_socket("nebula1"),
        })
    }
}
