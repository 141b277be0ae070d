use std::process::ExitCode;

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

#[derive(clap::Args)]
#[command(after_help = "\
Install, e.g.:
  cos-mesh completions bash > /usr/share/bash-completion/completions/cos-mesh
  cos-mesh completions zsh  > /usr/share/zsh/vendor-completions/_cos-mesh
  cos-mesh completions fish > /usr/share/fish/vendor_completions.d/cos-mesh.fish")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let mut cmd = super::Cli::command();
    // Into memory first: clap_complete panics on a write error (a reader that went away).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cos-mesh", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}
