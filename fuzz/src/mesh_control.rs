//! The in-tunnel control messages (`mesh::control::Control::decode`): whatever decodes must
//! encode back to a packet, framed as IPv4 and as IPv6, that decodes to the same message.

use cos_mesh::mesh::control::{Control, Framing, payload_for};

use super::fixtures::vpn;

pub fn run(data: &[u8]) {
    let Ok(msg) = Control::decode(data) else {
        return;
    };
    let (v6_src, v6_dst) = ("fd00::2".parse().expect("an address"), "fd00::1".parse().expect("an address"));
    let ours = ["100.64.0.1/10".parse().expect("a network"), "fd00::1/64".parse().expect("a network")];
    for framing in [Framing::V4 { src: vpn(2), dst: vpn(1) }, Framing::V6 { src: v6_src, dst: v6_dst }] {
        let packet = msg.to_packet(framing);
        let (_, payload) = payload_for(&packet, &ours).expect("an encoded control message is one for its destination");
        assert_eq!(Control::decode(payload).as_ref(), Ok(&msg), "decode(encode(m)) == m");
    }
}
