//! Nomad's mutual TLS over the overlay, shown for real: the world's nodes get certificates
//! from `cos-mesh nomad tls` (an inventory written from the world's plan), `openssl s_server`
//! listens on server-1's overlay address with its server certificate and requires a client
//! certificate, and `openssl s_client` connects from client-1 with and without one.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use super::world::{PLAN, World};
use crate::inventory::Inventory;
use crate::lab::{Process, wait_until};
use crate::nomad::tls::issue::{self, INSTALL_DIR, Options};
use crate::unixtime::UnixTime;

/// Where the handshake happens: Nomad's RPC port on server-1.
pub const ADDR: &str = "100.64.0.11:4647";

pub struct Handshake {
    /// client-1 with its client certificate got the server's reply.
    pub accepted: bool,
    /// client-1 without a certificate did not.
    pub refused: bool,
    /// What openssl said when refusing.
    pub refusal: String,
}

/// Makes the certificates and runs both handshakes; `None` when openssl is not installed.
pub fn run(world: &World) -> Result<Option<Handshake>> {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        return Ok(None);
    }
    let mut inventory = String::from("nodes:\n");
    for (name, role, octet, ..) in PLAN {
        let groups = role.groups().join(", ");
        inventory.push_str(&format!("  - {{name: {name}, ip: 100.64.0.{octet}/10, groups: [{groups}]}}\n"));
    }
    let inv_path = world.dir.0.join("inventory.yaml");
    std::fs::write(&inv_path, inventory)?;
    let inv = Inventory::load(&inv_path)?;
    let out = world.dir.0.join("nomad-tls");
    let opts = Options {
        out_dir: out.clone(),
        region: inv.nomad.region.clone(),
        renew_before: Duration::from_secs(30 * 86_400),
        days: crate::nomad::tls::CERT_DAYS,
        install_dir: INSTALL_DIR.into(),
    };
    issue::run(&inv, &opts, UnixTime::now()).context("cos-mesh nomad tls for the demo's world")?;
    let file = |node: &str, f: &str| out.join(node).join(f).display().to_string();
    let ca = file("server-1", "nomad-agent-ca.pem");

    let server = world.host("server-1");
    let _s_server = Process(
        server
            .ns
            .command(
                "openssl",
                &[
                    "s_server",
                    "-accept",
                    ADDR,
                    "-cert",
                    &file("server-1", "global-server-nomad.pem"),
                    "-key",
                    &file("server-1", "global-server-nomad-key.pem"),
                    "-CAfile",
                    &ca,
                    "-Verify",
                    "1",
                    "-verify_return_error",
                    "-www",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting openssl s_server")?,
    );
    let client = world.host("client-1");
    let with_cert = [
        "-cert".to_string(),
        file("client-1", "global-client-nomad.pem"),
        "-key".into(),
        file("client-1", "global-client-nomad-key.pem"),
    ];
    let mut accepted = false;
    wait_until(Duration::from_secs(8), || {
        accepted = s_client(&client.ns, &ca, &with_cert).map(|(ok, _)| ok).unwrap_or(false);
        accepted
    });
    let (got_reply, refusal) = s_client(&client.ns, &ca, &[])?;
    Ok(Some(Handshake { accepted, refused: !got_reply, refusal }))
}

/// One `openssl s_client` exchange (an HTTP request to s_server's `-www` page): whether the
/// reply came, and openssl's complaint if not.
fn s_client(ns: &crate::lab::Netns, ca: &str, extra: &[String]) -> Result<(bool, String)> {
    let mut args: Vec<&str> = vec![
        "10",
        "openssl",
        "s_client",
        "-connect",
        ADDR,
        "-CAfile",
        ca,
        "-verify_hostname",
        "server.global.nomad",
        "-verify_return_error",
        "-quiet",
    ];
    args.extend(extra.iter().map(String::as_str));
    let mut child = ns
        .command("timeout", &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl s_client")?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    }
    let out = child.wait_with_output()?;
    let reply = String::from_utf8_lossy(&out.stdout).contains("HTTP/1.0 200 ok");
    // openssl's line reads "...:tlsv13 alert certificate required:../ssl/...": keep the alert.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaint = match stderr.find("alert ") {
        Some(at) => format!("TLS {}", stderr[at..].split(':').next().unwrap_or("alert").trim()),
        None => stderr.lines().next().unwrap_or("no reply").trim().to_string(),
    };
    Ok((reply, complaint))
}

/// The paragraph the demo prints.
pub fn describe(h: &Option<Handshake>, dir: &Path) -> String {
    let Some(h) = h else {
        return "Mutual TLS: skipped, openssl is not installed (Debian: apt-get install openssl).\n".into();
    };
    let verdict = |ok: bool, good: &str, bad: &str| if ok { good.to_string() } else { format!("! {bad}") };
    format!(
        "Mutual TLS over the overlay (certificates from `cos-mesh nomad tls` in {}; openssl s_server on\n\
         server-1 {ADDR}, Nomad's RPC port, with its server certificate, requiring a client certificate):\n  \
         client-1 with its client certificate (CN client.global.nomad): {}\n  \
         client-1 without a certificate: {}\n",
        dir.join("nomad-tls").display(),
        verdict(h.accepted, "accepted, and it verified the server as server.global.nomad", "NOT accepted"),
        verdict(h.refused, &format!("refused ({})", h.refusal), "NOT refused"),
    )
}
