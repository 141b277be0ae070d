//! The command line: one file per subcommand. Errors print as `Error: <reason>` on stderr with
//! exit status 1; usage errors exit 2 (clap's convention).

mod ca;
mod check;
mod completions;
mod consul;
mod demo;
mod firewall;
mod keygen;
mod man;
mod members;
mod nomad;
mod ping;
mod print;
mod reload;
mod run;
mod sign;
mod socket;
mod status;
mod verify;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cos-mesh",
    version,
    about = "Overlay mesh for Nomad clusters across environments (Nebula-compatible PKI, WireGuard tunnels)",
    propagate_version = true,
    after_help = "Exit status: 0 success; 1 failure, with `Error: <reason>` naming the file, field or peer \
                  (also: `verify` for an invalid certificate, `firewall explain` for drop/reject, `demo` for a \
                  matrix cell that disagrees with the rules); 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a certificate authority (Ed25519 key + self-signed Nebula v1 certificate).
    Ca(ca::Args),
    /// Create an X25519 host key pair, for signing with `sign --in-pub` elsewhere.
    Keygen(keygen::Args),
    /// Sign a node certificate with the CA.
    Sign(sign::Args),
    /// Print every certificate in a PEM file.
    Print(print::Args),
    /// Verify a certificate against a CA bundle (silent, exit 0, when valid).
    Verify(verify::Args),
    /// Validate a node config, its PKI and firewall as a start would, without touching the network.
    Check(check::Args),
    /// Run the node daemon: TUN, tunnels, firewall (systemd: Type=notify, SIGHUP reloads).
    Run(run::Args),
    /// Show this node, its peers and lighthouses, from the running daemon.
    Status(status::Args),
    /// List the mesh's members (from the lighthouses), e.g. the Nomad servers to join.
    Members(members::Args),
    /// Reload the running daemon's configuration and say whether it worked.
    Reload(reload::Args),
    /// Ping a member through the mesh: the path taken, the round trip, and whether its firewall lets us in.
    Ping(ping::Args),
    /// Build a small mesh world in network namespaces (root), show it working, tear it down.
    Demo(demo::Args),
    /// Lint firewall rule files and explain verdicts.
    Firewall(firewall::Args),
    /// Nomad glue: the agent settings that put Nomad on the overlay.
    Nomad(nomad::Args),
    /// Consul glue: the agent settings that put Consul on the overlay.
    Consul(consul::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Print the man page (roff), or write one page per command with --out-dir.
    Man(man::Args),
}

/// Runs the CLI and returns the process exit status.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca(a) => ca::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Print(a) => print::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Check(a) => check::run(a),
        Command::Run(a) => run::run(a),
        Command::Status(a) => status::run(a),
        Command::Members(a) => members::run(a),
        Command::Reload(a) => reload::run(a),
        Command::Ping(a) => ping::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Firewall(a) => firewall::run(a),
        Command::Nomad(a) => nomad::run(a),
        Command::Consul(a) => consul::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    };
    match result {
        Ok(code) => code,
        // `cos-mesh status | head -1`: the reader has what it wanted.
        Err(e) if stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `e` is a write to a stdout whose reader has gone.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Commands write through `writeln!(out, ...)?`, so a closed pipe comes back as an error that
/// [`stdout_closed`] recognises. `println!` panics instead (Rust ignores SIGPIPE); this hook turns
/// that one panic into a quiet exit 0, so no command, present or future, dies with exit 101
/// when its output is piped into `head`.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// clap value parser: a Go duration (`8760h`, `90m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// Splits comma-separated groups as nebula-cert does: trimmed, empty entries dropped.
fn clean_groups(groups: &[String]) -> Vec<String> {
    groups.iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect()
}
