//! Shell completions and man pages come from the same clap definition as the CLI, so they
//! list every subcommand, including the Nomad and inventory ones.

use std::process::Command;

fn cos(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cos-mesh")).args(args).output().unwrap();
    assert!(out.status.success(), "cos-mesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const SUBCOMMANDS: [&str; 7] = ["sign", "nomad", "members", "ping", "completions", "man", "firewall"];

#[test]
fn completions_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let text = cos(&["completions", shell]);
        assert!(text.len() > 1000, "{shell}: {} bytes", text.len());
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let bash = cos(&["completions", "bash"]);
    assert!(bash.contains("--servers-from") && bash.contains("--inventory") && bash.contains("--renew-before"));
    let out = Command::new("bash").args(["-n", "-c", &bash]).output().unwrap();
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn man_page_prints_and_writes_one_page_per_command() {
    let page = cos(&["man"]);
    assert!(page.contains(".TH cos-mesh 1"), "{}", &page[..200.min(page.len())]);
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "man page lacks {sub}");
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("man1");
    cos(&["man", "--out-dir", out.to_str().unwrap()]);
    for page in
        ["cos-mesh.1", "cos-mesh-sign.1", "cos-mesh-nomad.1", "cos-mesh-nomad-config.1", "cos-mesh-completions.1"]
    {
        let text = std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let sign = std::fs::read_to_string(out.join("cos-mesh-sign.1")).unwrap();
    assert!(sign.contains("inventory") && sign.contains("renew"), "sign page documents --inventory");
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("man")
            .args(["-l", "-"])
            .env("MANPAGER", "cat")
            .stdin(std::fs::File::open(out.join("cos-mesh-nomad-config.1")).unwrap())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("servers-from"));
    }
}
