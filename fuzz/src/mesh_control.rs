//! The in-tunnel control messages (`mesh::control::Control::decode`): whatever decodes must
//! encode back to a packet that decodes to the same message.

use cos_mesh::mesh::control::{Control, payload_for};

use super::fixtures::vpn;

pub fn run(data: &[u8]) {
    let Ok(msg) = Control::decode(data) else {
        return;
    };
    let packet = msg.to_packet(vpn(2), vpn(1));
    let payload = payload_for(&packet, vpn(1)).expect("an encoded control message is one for its destination");
    assert_eq!(Control::decode(payload).as_ref(), Ok(&msg), "decode(encode(m)) == m");
}
