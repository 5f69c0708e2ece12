//! The DNS responder: any datagram a neighbour sends gets nothing, a reply that parses as a
//! DNS response with the query's id, or (only where the network forwards) a forward — never a
//! panic, and never a forward from an internal network.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::Arc;

use berth_net::dns::{respond, Action, OutsideNames, ResponderConfig};
use berth_net::Subnet;
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fn config(outside: OutsideNames) -> ResponderConfig {
    ResponderConfig {
        lookup: Arc::new(|name: &str| (name == "web").then_some(Ipv4Addr::new(10, 89, 0, 2))),
        clients: Subnet::parse("10.89.0.0/24").expect("subnet"),
        outside,
    }
}

fuzz_target!(|packet: &[u8]| {
    let upstream = "127.0.0.1:53".parse().expect("address");
    for outside in [
        OutsideNames::Forward(vec![upstream]),
        OutsideNames::Refuse,
        OutsideNames::Unknown,
    ] {
        let internal = outside == OutsideNames::Refuse;
        match respond(packet, &config(outside)) {
            Action::Ignore => {}
            Action::Forward { id, .. } => {
                assert!(!internal, "an internal network forwarded a query");
                assert_eq!(id, u16::from_be_bytes([packet[0], packet[1]]));
            }
            Action::Reply(reply) => {
                let message = Message::from_vec(&reply).expect("the responder's reply parses");
                assert_eq!(message.metadata.message_type, MessageType::Response);
                assert_eq!(message.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
            }
        }
    }
});
