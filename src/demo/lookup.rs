//! DNS for the mesh, shown: both lighthouses serve it (`lighthouse.serve_dns`) on their overlay
//! address, and client-2 asks lighthouse-1 over the overlay for a group, a node and a stranger.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use anyhow::Result;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::world::World;
use crate::lab::wait_until;

/// (name asked, expected answer: addresses, or empty for NXDOMAIN)
pub const QUESTIONS: [(&str, &[Ipv4Addr]); 3] = [
    ("nomad-server.mesh", &[Ipv4Addr::new(100, 64, 0, 11), Ipv4Addr::new(100, 64, 0, 12)]),
    ("client-1", &[Ipv4Addr::new(100, 64, 0, 21)]),
    ("nobody.mesh", &[]),
];

pub struct Answer {
    pub name: &'static str,
    /// The addresses, or `None` for NXDOMAIN; `Err` text when no reply came.
    pub got: Result<Option<Vec<Ipv4Addr>>, String>,
    pub expected: &'static [Ipv4Addr],
}

impl Answer {
    pub fn ok(&self) -> bool {
        match &self.got {
            Ok(Some(ips)) => ips.as_slice() == self.expected,
            Ok(None) => self.expected.is_empty(),
            Err(_) => false,
        }
    }
}

/// Asks every question (waiting up to 5 s for the lighthouse's once-a-second snapshot).
pub fn run(world: &World) -> Result<Vec<Answer>> {
    let client = world.host("client-2");
    let mut answers = vec![];
    for (name, expected) in QUESTIONS {
        let mut got = Err("no reply".to_string());
        wait_until(Duration::from_secs(5), || {
            got = client.ns.run(move || ask(name)).unwrap_or_else(|e| Err(e.to_string()));
            Answer { name, got: got.clone(), expected }.ok()
        });
        answers.push(Answer { name, got, expected });
    }
    Ok(answers)
}

fn ask(name: &str) -> Result<Option<Vec<Ipv4Addr>>, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| e.to_string())?;
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).map_err(|e| e.to_string())?, RecordType::A));
    socket.send_to(&q.to_vec().map_err(|e| e.to_string())?, "100.64.0.1:53").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    let reply = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    if reply.metadata.response_code == ResponseCode::NXDomain {
        return Ok(None);
    }
    let mut ips: Vec<Ipv4Addr> =
        reply.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
    ips.sort();
    Ok(Some(ips))
}

/// The paragraph the demo prints.
pub fn describe(answers: &[Answer]) -> String {
    let mut s =
        String::from("DNS for the mesh (lighthouse-1 serves it on 100.64.0.1:53; client-2 asks over the overlay):\n");
    for a in answers {
        let got = match &a.got {
            Ok(Some(ips)) => ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
            Ok(None) => "NXDOMAIN".into(),
            Err(e) => format!("no answer ({e})"),
        };
        let mark = if a.ok() { "" } else { "! " };
        s.push_str(&format!("  {mark}{:<20} {got}\n", a.name));
    }
    s
}
