//! IPv4/IPv6 packet parsing (`cos_mesh::packet`) and the reject replies built from packets.

use cos_mesh::packet::{Flow, Ipv4Packet, Ipv6Packet, MAX_REJECT_LEN, Transport, build_reject};

pub fn run(data: &[u8]) {
    if let Ok(p) = Ipv4Packet::new(data) {
        let t = Transport::new(p.protocol(), p.payload());
        let _ = (p.src(), p.dst(), p.header(), p.more_fragments(), p.is_first_fragment());
        let _ = (t.ports(), t.tcp_flags(), t.icmp_type_code());
        assert!(p.header_len() >= 20 && p.header_len() + p.payload().len() <= data.len());
    }
    if let Ok(p) = Ipv6Packet::new(data) {
        let t = Transport::new(p.protocol(), p.payload());
        let _ = (p.src(), p.dst(), p.fragment_offset(), t.ports(), t.icmp_type_code());
    }
    let inbound = Flow::parse(data, true);
    let outbound = Flow::parse(data, false);
    assert_eq!(inbound.is_ok(), outbound.is_ok());
    if let (Ok(i), Ok(o)) = (inbound, outbound) {
        // The two orientations of one packet see the same endpoints, swapped.
        assert_eq!((i.local_ip, i.remote_ip, i.local_port), (o.remote_ip, o.local_ip, o.remote_port));
    }
    let mut out = [0u8; MAX_REJECT_LEN];
    if let Ok(n) = build_reject(data, &mut out) {
        // A reject goes back to the sender as a valid packet, and never answers itself.
        let reply = Flow::parse(&out[..n], false).expect("a reject reply parses");
        // build_reject answers some packets the firewall calls malformed (a UDP header cut
        // short): harmless, since the firewall drops those before any reject is built.
        if let Ok(orig) = Flow::parse(data, true) {
            assert_eq!((reply.local_ip, reply.remote_ip), (orig.local_ip, orig.remote_ip));
        }
        assert!(build_reject(&out[..n], &mut [0u8; MAX_REJECT_LEN]).is_err(), "a reject is never rejected");
    }
    let _ = build_reject(data, &mut [0u8; 8]);
}
