use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crate::daemon::control::{Request, ask};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::socket::Target,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let v = ask(&a.target.path()?, Request::Status)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let n = &v["node"];
    println!(
        "node {} {} groups [{}] cert until {} listening {} on {}{}",
        s(&n["name"]),
        s(&n["vpn_ip"]),
        list(&n["groups"]),
        s(&n["cert_not_after"]),
        s(&n["listen"]),
        s(&n["tun"]),
        if n["lighthouse"].as_bool() == Some(true) { " (lighthouse)" } else { "" }
    );
    for lh in v["lighthouses"].as_array().into_iter().flatten() {
        println!(
            "lighthouse {} {}",
            s(&lh["vpn_ip"]),
            if lh["up"].as_bool() == Some(true) { "reachable" } else { "NOT reachable" }
        );
    }
    println!(
        "{:<20} {:<15} {:<24} {:<26} {:<5} {:>12} {:>12} {:>9} {:>8}",
        "PEER", "OVERLAY IP", "GROUPS", "ENDPOINT", "UP", "RX BYTES", "TX BYTES", "HANDSHAKE", "FW DROPS"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<15} {:<24} {:<26} {:<5} {:>12} {:>12} {:>9} {:>8}",
            s(&p["name"]),
            s(&p["vpn_ip"]),
            list(&p["groups"]),
            s(&p["endpoint"]),
            if p["up"].as_bool() == Some(true) { "yes" } else { "no" },
            s(&p["rx_bytes"]),
            s(&p["tx_bytes"]),
            p["since_handshake_secs"].as_u64().map(|t| format!("{t}s ago")).unwrap_or_else(|| "-".into()),
            s(&p["firewall_dropped"]),
        );
    }
    let fw = &v["firewall"]["counters"];
    println!(
        "firewall: rules version {}, {} tracked flows, drops {}",
        v["firewall"]["rules_version"], v["firewall"]["conntrack_entries"], fw
    );
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default()
}
