use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cert::Certificate;
use crate::cert::armor;
use crate::files;

#[derive(clap::Args)]
pub struct Args {
    /// Certificate file (PEM; every block is printed).
    #[arg(required_unless_present = "path")]
    file: Option<PathBuf>,
    /// The same, as nebula-cert spells it.
    #[arg(long, conflicts_with = "file")]
    path: Option<PathBuf>,
    /// One JSON object per certificate, shaped like `nebula-cert print -json`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let Some(path) = a.file.or(a.path) else { bail!("a certificate file is required") };
    let bytes = files::read(&path, "certificate")?;
    let blocks = armor::decode_all(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    for block in blocks {
        if block.label.contains("PRIVATE KEY") {
            bail!(
                "{} line {}: {} is a private key; print shows certificates only",
                path.display(),
                block.line,
                block.label
            );
        }
        let cert =
            Certificate::from_block(&block).with_context(|| format!("{} line {}", path.display(), block.line))?;
        if a.json {
            println!("{}", cert.to_json());
        } else {
            print!("{}", cert.to_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}
