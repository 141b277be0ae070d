//! The rendered snippet, parsed back with hcl-rs: the keys Nomad reads hold what we meant.

use serde_json::Value;

use super::*;

fn snippet(role: Role) -> AgentSnippet {
    AgentSnippet {
        role,
        node_name: "node-1".into(),
        overlay_ip: "100.64.0.11/10".parse().unwrap(),
        dev: "nebula1".into(),
        servers: vec!["100.64.0.11".parse().unwrap(), "100.64.0.12".parse().unwrap()],
        servers_from: "a test".into(),
        datacenter: Some("aws-eu-west-1".into()),
        bootstrap_expect: None,
        dynamic_ports: DynamicPorts::nomad_default(),
    }
}

fn parse(s: &AgentSnippet) -> Value {
    let text = s.render().unwrap();
    ::hcl::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const TEMPLATE: &str = r#"{{ GetInterfaceIP "nebula1" }}"#;

#[test]
fn client_snippet_parses_with_overlay_network_and_ports() {
    let v = parse(&snippet(Role::Client));
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
    let v = parse(&snippet(Role::Server));
    for k in ["http", "rpc", "serf"] {
        assert_eq!(v["advertise"][k], TEMPLATE, "advertise.{k}");
    }
    assert_eq!(v["server"]["bootstrap_expect"], 2);
    assert_eq!(v["server"]["server_join"]["retry_join"], serde_json::json!(["100.64.0.11", "100.64.0.12"]));
    assert!(v.get("client").is_none());

    let mut s = snippet(Role::Server);
    s.bootstrap_expect = Some(3);
    assert_eq!(parse(&s)["server"]["bootstrap_expect"], 3);
}

#[test]
fn loopback_http_always_comes_with_explicit_advertise() {
    for role in [Role::Server, Role::Client] {
        let v = parse(&snippet(role));
        if v["addresses"]["http"].as_str().unwrap().starts_with("127.") {
            assert!(v["advertise"]["http"].as_str().is_some_and(|s| !s.starts_with("127.")));
        }
    }
}

#[test]
fn other_tun_device_is_used_everywhere() {
    let mut s = snippet(Role::Client);
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
        let mut s = snippet(Role::Client);
        s.overlay_ip = overlay.parse().unwrap();
        let err = s.render().unwrap_err();
        assert!(matches!(err, LintError::ReservedOverlap { .. }), "{err}");
        assert!(err.to_string().contains(network), "{err}");
    }
    let mut s = snippet(Role::Server);
    s.servers.clear();
    let err = s.render().unwrap_err().to_string();
    assert!(err.contains("--servers-from inventory") && err.contains("daemon running"), "{err}");

    let mut s = snippet(Role::Client);
    s.datacenter = Some("dc\"1".into());
    assert!(matches!(s.render().unwrap_err(), LintError::BadValue { field: "datacenter", .. }));
}

#[test]
fn bootstrap_expect_is_at_least_one() {
    let mut s = snippet(Role::Server);
    s.servers.truncate(1);
    assert_eq!(s.bootstrap_expect(), 1);
    s.bootstrap_expect = Some(0);
    assert_eq!(s.bootstrap_expect(), 1);
}
