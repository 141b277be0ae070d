//! The rendered snippet, parsed back with hcl-rs: the keys Nomad reads hold what we meant.

use serde_json::Value;

use super::*;

fn snippet(roles: Roles) -> AgentSnippet {
    AgentSnippet {
        roles,
        node_name: "node-1".into(),
        overlay_ip: "100.64.0.11/10".parse().unwrap(),
        dev: "nebula1".into(),
        servers: vec!["100.64.0.11".parse().unwrap(), "100.64.0.12".parse().unwrap()],
        servers_from: "a test".into(),
        join_dns: None,
        region: None,
        datacenter: Some("aws-eu-west-1".into()),
        bootstrap_expect: None,
        dynamic_ports: DynamicPorts::nomad_default(),
        tls: None,
        gossip: Gossip::Missing,
    }
}

fn parse(s: &AgentSnippet) -> Value {
    let text = s.render().unwrap();
    ::hcl::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const TEMPLATE: &str = r#"{{ GetInterfaceIP "nebula1" }}"#;

#[test]
fn client_snippet_parses_with_overlay_network_and_ports() {
    let v = parse(&snippet(Roles::CLIENT));
    assert_eq!(v["datacenter"], "aws-eu-west-1");
    assert_eq!(v["bind_addr"], TEMPLATE);
    assert_eq!(v["addresses"]["http"], format!("127.0.0.1 {TEMPLATE}"));
    assert_eq!(v["advertise"]["http"], TEMPLATE);
    assert!(v["advertise"].get("rpc").is_none());
    let c = &v["client"];
    assert_eq!(c["enabled"], true);
    assert_eq!(c["min_dynamic_port"], 20000);
    assert_eq!(c["max_dynamic_port"], 32000);
    assert_eq!(c["host_network"]["overlay"]["interface"], "nebula1");
    assert_eq!(c["host_network"]["overlay"]["cidr"], "100.64.0.0/10");
    assert_eq!(c["server_join"]["retry_join"], serde_json::json!(["100.64.0.11", "100.64.0.12"]));
    assert!(v.get("server").is_none());
}

#[test]
fn server_snippet_advertises_everything_and_expects_the_servers_found() {
    let v = parse(&snippet(Roles::SERVER));
    for k in ["http", "rpc", "serf"] {
        assert_eq!(v["advertise"][k], TEMPLATE, "advertise.{k}");
    }
    assert_eq!(v["server"]["bootstrap_expect"], 2);
    assert_eq!(v["server"]["server_join"]["retry_join"], serde_json::json!(["100.64.0.11", "100.64.0.12"]));
    assert!(v.get("client").is_none());

    let mut s = snippet(Roles::SERVER);
    s.bootstrap_expect = Some(3);
    assert_eq!(parse(&s)["server"]["bootstrap_expect"], 3);
}

#[test]
fn loopback_http_always_comes_with_explicit_advertise() {
    for role in [Roles::SERVER, Roles::CLIENT] {
        let v = parse(&snippet(role));
        if v["addresses"]["http"].as_str().unwrap().starts_with("127.") {
            assert!(v["advertise"]["http"].as_str().is_some_and(|s| !s.starts_with("127.")));
        }
    }
}

#[test]
fn other_tun_device_is_used_everywhere() {
    let mut s = snippet(Roles::CLIENT);
    s.dev = "mesh0".into();
    let v = parse(&s);
    assert_eq!(v["bind_addr"], r#"{{ GetInterfaceIP "mesh0" }}"#);
    assert_eq!(v["client"]["host_network"]["overlay"]["interface"], "mesh0");
    assert!(!s.render().unwrap().contains("nebula1\\\""));
}

#[test]
fn lint_refuses_bridge_overlaps_and_missing_servers() {
    for (overlay, network) in
        [("172.26.64.5/24", "172.26.64.0/20"), ("172.17.3.4/24", "172.17.0.0/16"), ("172.16.0.1/12", "172.26.64.0/20")]
    {
        let mut s = snippet(Roles::CLIENT);
        s.overlay_ip = overlay.parse().unwrap();
        let err = s.render().unwrap_err();
        assert!(matches!(err, LintError::ReservedOverlap { .. }), "{err}");
        assert!(err.to_string().contains(network), "{err}");
    }
    let mut s = snippet(Roles::SERVER);
    s.servers.clear();
    let err = s.render().unwrap_err().to_string();
    assert!(err.contains("--servers-from inventory") && err.contains("daemon running"), "{err}");

    let mut s = snippet(Roles::CLIENT);
    s.datacenter = Some("dc\"1".into());
    assert!(matches!(s.render().unwrap_err(), LintError::BadValue { field: "datacenter", .. }));
}

#[test]
fn bootstrap_expect_is_at_least_one() {
    let mut s = snippet(Roles::SERVER);
    s.servers.truncate(1);
    assert_eq!(s.bootstrap_expect(), 1);
    s.bootstrap_expect = Some(0);
    assert_eq!(s.bootstrap_expect(), 1);
}

#[test]
fn tls_block_region_and_network_interface() {
    let mut s = snippet(Roles::CLIENT);
    s.region = Some("eu".into());
    s.tls = Some(TlsFiles { dir: "/etc/nomad.d/tls".into(), region: "eu".into() });
    let v = parse(&s);
    assert_eq!(v["region"], "eu");
    assert_eq!(v["client"]["network_interface"], "nebula1");
    let t = &v["tls"];
    for k in ["http", "rpc", "verify_server_hostname", "verify_https_client"] {
        assert_eq!(t[k], true, "tls.{k}");
    }
    assert_eq!(t["ca_file"], "/etc/nomad.d/tls/nomad-agent-ca.pem");
    assert_eq!(t["cert_file"], "/etc/nomad.d/tls/eu-client-nomad.pem");
    assert_eq!(t["key_file"], "/etc/nomad.d/tls/eu-client-nomad-key.pem");
    s.roles = Roles::SERVER;
    assert_eq!(parse(&s)["tls"]["cert_file"], "/etc/nomad.d/tls/eu-server-nomad.pem");
}

#[test]
fn combined_role_has_both_blocks_and_uses_the_server_certificate() {
    let mut s = snippet(Roles::BOTH);
    s.tls = Some(TlsFiles { dir: "/t".into(), region: "global".into() });
    let v = parse(&s);
    assert_eq!(v["server"]["enabled"], true);
    assert_eq!(v["client"]["enabled"], true);
    assert_eq!(v["server"]["server_join"]["retry_join"], serde_json::json!(["100.64.0.11", "100.64.0.12"]));
    assert!(v["client"].get("server_join").is_none(), "the client uses its own server");
    assert_eq!(v["client"]["host_network"]["overlay"]["interface"], "nebula1");
    for k in ["rpc", "serf"] {
        assert_eq!(v["advertise"][k], TEMPLATE);
    }
    assert_eq!(v["tls"]["cert_file"], "/t/global-server-nomad.pem");
    assert_eq!(Roles::from_list(&[Role::Client, Role::Server]), Some(Roles::BOTH));
    assert_eq!(Roles::from_list(&[]), None);
}

#[test]
fn gossip_key_only_when_writing_a_file_and_checked() {
    let mut s = snippet(Roles::SERVER);
    s.gossip = Gossip::Key("kqnDxDuHOEt4ZJIn8v5cBOB3jeWMdb6SSm2A1mPnTrA=".into());
    assert_eq!(parse(&s)["server"]["encrypt"], "kqnDxDuHOEt4ZJIn8v5cBOB3jeWMdb6SSm2A1mPnTrA=");
    s.gossip = Gossip::Withheld;
    let text = s.render().unwrap();
    assert!(parse(&s)["server"].get("encrypt").is_none() && text.contains("never printed"), "{text}");
    s.gossip = Gossip::Key("c2hvcnQ=".into());
    let err = s.render().unwrap_err().to_string();
    assert!(err.contains("gossip key") && !err.contains("c2hvcnQ"), "{err}");
    let mut c = snippet(Roles::CLIENT);
    c.gossip = Gossip::Key("kqnDxDuHOEt4ZJIn8v5cBOB3jeWMdb6SSm2A1mPnTrA=".into());
    assert!(parse(&c).get("server").is_none(), "clients never carry the key");
}

#[test]
fn fewer_than_three_servers_is_warned_about() {
    let s = snippet(Roles::SERVER);
    let w = s.warnings();
    assert!(w.iter().any(|w| w.contains("bootstrap_expect = 2") && w.contains("quorum")), "{w:?}");
    assert!(s.render().unwrap().contains("# WARNING: bootstrap_expect = 2"));
    let mut three = snippet(Roles::SERVER);
    three.bootstrap_expect = Some(3);
    three.gossip = Gossip::Withheld;
    assert!(three.warnings().is_empty(), "{:?}", three.warnings());
    assert!(snippet(Roles::CLIENT).warnings().is_empty());
}

#[test]
fn a_dns_name_joins_too_and_can_stand_alone() {
    let mut s = snippet(Roles::CLIENT);
    s.join_dns = Some("nomad-server.mesh".into());
    let v = parse(&s);
    assert_eq!(
        v["client"]["server_join"]["retry_join"],
        serde_json::json!(["100.64.0.11", "100.64.0.12", "nomad-server.mesh"])
    );
    s.servers.clear();
    assert_eq!(parse(&s)["client"]["server_join"]["retry_join"], serde_json::json!(["nomad-server.mesh"]));
    s.join_dns = Some("a b".into());
    assert!(matches!(s.render(), Err(LintError::BadValue { field: "--retry-join-dns", .. })));
}
