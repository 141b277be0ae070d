//! Replies read back with hickory-proto: what dig would show.

use hickory_proto::op::Query;
use hickory_proto::rr::Name;
use proptest::prelude::*;

use super::*;

fn members() -> Vec<Member> {
    let m = |name: &str, ip: [u8; 4], groups: &[&str]| Member {
        name: name.into(),
        ipv4: vec![Ipv4Addr::from(ip)],
        ipv6: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    vec![
        m("lighthouse-1", [100, 64, 0, 1], &["lighthouse"]),
        m("server-1", [100, 64, 0, 11], &["nomad-server", "consul-server"]),
        m("server-2", [100, 64, 0, 12], &["nomad-server"]),
        m("Client-1", [100, 64, 1, 1], &["nomad-client"]),
    ]
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

fn ask(name: &str, qtype: RecordType) -> (Message, Outcome) {
    let records = Records::new(&members(), "mesh");
    let (reply, outcome) = respond(&query(name, qtype), &records);
    (Message::from_vec(&reply.expect("a reply")).unwrap(), outcome)
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> =
        m.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
    v.sort();
    v
}

#[test]
fn node_names_bare_and_in_the_zone() {
    for name in ["server-1.", "server-1", "SERVER-1.", "server-1.mesh.", "client-1.mesh"] {
        let (m, o) = ask(name, RecordType::A);
        assert_eq!((o, m.metadata.response_code, m.metadata.id), (Outcome::Answered, ResponseCode::NoError, 4242));
        assert_eq!(m.answers.len(), 1, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].ttl, TTL);
    }
    assert_eq!(a_records(&ask("server-1.", RecordType::A).0), [Ipv4Addr::new(100, 64, 0, 11)]);
}

#[test]
fn group_names_answer_every_member() {
    let (m, _) = ask("nomad-server.mesh.", RecordType::A);
    assert_eq!(a_records(&m), [Ipv4Addr::new(100, 64, 0, 11), Ipv4Addr::new(100, 64, 0, 12)]);
    assert_eq!(a_records(&ask("consul-server.mesh.", RecordType::A).0), [Ipv4Addr::new(100, 64, 0, 11)]);
    // Groups live only in the zone.
    assert_eq!(ask("nomad-server.", RecordType::A).1, Outcome::NxDomain);
}

#[test]
fn unknown_names_are_nxdomain_and_other_types_nodata() {
    let (m, o) = ask("nobody.mesh.", RecordType::A);
    assert_eq!((o, m.metadata.response_code), (Outcome::NxDomain, ResponseCode::NXDomain));
    assert_eq!(m.queries.len(), 1, "the question is echoed");
    let (m, o) = ask("server-1.", RecordType::AAAA);
    assert_eq!((o, m.metadata.response_code, m.answers.len()), (Outcome::Answered, ResponseCode::NoError, 0));
    let (m, _) = ask("server-1.", RecordType::MX);
    assert!(m.answers.is_empty());
}

#[test]
fn ipv6_members_get_aaaa() {
    let mut ms = members();
    ms[1].ipv6.push("fd00::11".parse().unwrap());
    let records = Records::new(&ms, "mesh");
    let (reply, _) = respond(&query("server-1.", RecordType::AAAA), &records);
    let m = Message::from_vec(&reply.unwrap()).unwrap();
    assert!(matches!(&m.answers[0].data, RData::AAAA(a) if a.0 == "fd00::11".parse::<Ipv6Addr>().unwrap()));
}

#[test]
fn big_groups_are_truncated_to_fit_512_bytes() {
    let ms: Vec<Member> = (0..200u8)
        .map(|i| Member {
            name: format!("c{i}"),
            ipv4: vec![Ipv4Addr::new(100, 64, 2, i)],
            ipv6: vec![],
            groups: vec!["nomad-client".into()],
        })
        .collect();
    let records = Records::new(&ms, "mesh");
    let (reply, _) = respond(&query("nomad-client.mesh.", RecordType::A), &records);
    let bytes = reply.unwrap();
    assert!(bytes.len() <= 512, "{}", bytes.len());
    let m = Message::from_vec(&bytes).unwrap();
    assert!(m.metadata.truncation && !m.answers.is_empty());
}

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let records = Records::new(&members(), "mesh");
    // A header and garbage: FORMERR with the same ID.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    junk.extend([0xff; 20]);
    let (reply, o) = respond(&junk, &records);
    let m = Message::from_vec(&reply.unwrap()).unwrap();
    assert_eq!((o, m.metadata.id, m.metadata.response_code), (Outcome::Malformed, 0x1234, ResponseCode::FormErr));
    // Shorter than a header, or a response: dropped.
    assert_eq!(respond(&[1, 2, 3], &records), (None, Outcome::Dropped));
    let mut answer = query("server-1.", RecordType::A);
    answer[2] |= 0x80;
    assert_eq!(respond(&answer, &records), (None, Outcome::Dropped));
    // Two questions: FORMERR.
    let mut two = Message::query();
    two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    let (reply, o) = respond(&two.to_vec().unwrap(), &records);
    assert_eq!(
        (o, Message::from_vec(&reply.unwrap()).unwrap().metadata.response_code),
        (Outcome::Malformed, ResponseCode::FormErr)
    );
    // A NOTIFY: not implemented.
    let mut notify = Message::new(7, MessageType::Query, OpCode::Notify);
    notify.add_query(Query::query(Name::from_ascii("mesh.").unwrap(), RecordType::SOA));
    let (reply, o) = respond(&notify.to_vec().unwrap(), &records);
    assert_eq!(
        (o, Message::from_vec(&reply.unwrap()).unwrap().metadata.response_code),
        (Outcome::NotImplemented, ResponseCode::NotImp)
    );
}

proptest! {
    #[test]
    fn any_datagram_is_handled_without_panic_and_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let records = Records::new(&members(), "mesh");
        let (reply, _) = respond(&bytes, &records);
        if let Some(r) = reply {
            prop_assert!(r.len() <= MAX_UDP);
        }
    }
}
