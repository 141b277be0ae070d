use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crate::daemon::control::{Request, ask};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::socket::Target,
    /// Only members whose certificate carries this group (e.g. nomad-server).
    #[arg(long)]
    group: Option<String>,
    /// `table` (default), `json`, or `addrs`: overlay IPs separated by spaces, as Nomad's
    /// `retry_join = ["exec=cos-mesh members --group nomad-server --format addrs"]` expects.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "addrs"])]
    format: String,
    /// Same as `--format json`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let v = ask(&a.target.path()?, Request::Members)?;
    let members: Vec<&Value> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| a.group.as_ref().is_none_or(|g| m["groups"].as_array().is_some_and(|gs| gs.iter().any(|x| x == g))))
        .collect();
    match (a.json, a.format.as_str()) {
        (true, _) | (_, "json") => println!("{}", serde_json::to_string_pretty(&members)?),
        (_, "addrs") => {
            println!("{}", members.iter().filter_map(|m| m["vpn_ip"].as_str()).collect::<Vec<_>>().join(" "))
        }
        _ => {
            println!("{:<24} {:<15} GROUPS", "NAME", "OVERLAY IP");
            for m in members {
                let groups: Vec<&str> =
                    m["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str()).collect();
                println!(
                    "{:<24} {:<15} {}",
                    m["name"].as_str().unwrap_or("-"),
                    m["vpn_ip"].as_str().unwrap_or("-"),
                    groups.join(",")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
