//! `cos-mesh-daemon -c FILE|DIR`: the node daemon alone, what `cos-mesh run -c` execs when this
//! binary sits beside it. Its own binary so the daemon maps only its own code: the full CLI
//! (certificate issuing, Nomad/Consul rendering, the demo's SVG layout, man pages) makes
//! `cos-mesh` 9 MB of code, most of which a daemon would map at start and never run again.
//! Arguments parsed by hand: the one flag does not need clap's code in this binary.
#![warn(clippy::unwrap_used)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cos-mesh-daemon -c <FILE|DIR>  (normally started as `cos-mesh run -c <FILE|DIR>`)";

fn main() -> ExitCode {
    // `cos-mesh run` asks first, and hands over only to a daemon of its own build.
    if std::env::args_os().nth(1).is_some_and(|a| a == "--build-id") {
        println!("{}", cos_mesh::BUILD_ID);
        return ExitCode::SUCCESS;
    }
    let config = match config_arg(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("Error: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cos_mesh::daemon::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The config path of `-c PATH`, `--config PATH` or `--config=PATH`, the only arguments taken.
fn config_arg(mut args: impl Iterator<Item = OsString>) -> Result<PathBuf, String> {
    let config = match args.next() {
        Some(flag) if flag == "-c" || flag == "--config" => {
            args.next().ok_or_else(|| format!("{} needs a path", flag.to_string_lossy()))?
        }
        Some(flag) => match flag.to_str().and_then(|f| f.strip_prefix("--config=")) {
            Some(path) => path.into(),
            None => return Err(format!("unexpected argument {:?}", flag.to_string_lossy())),
        },
        None => return Err("no config given".into()),
    };
    match args.next() {
        Some(extra) => Err(format!("unexpected argument {:?}", extra.to_string_lossy())),
        None => Ok(config.into()),
    }
}
