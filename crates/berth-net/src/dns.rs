//! The DNS responder on a network's gateway: A records for the names of the instances on that
//! network (`name` and `name.berth`); other names go to the host's upstream resolvers, get
//! REFUSED on internal networks, or NXDOMAIN where there is no upstream. Messages are parsed
//! with hickory-proto, never by hand; a panic restarts the responder on the same socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::Subnet;

/// Answers a name on the network, if an instance has it.
pub type Lookup = Arc<dyn Fn(&str) -> Option<Ipv4Addr> + Send + Sync>;

/// Forwarded lookups in flight at once, per network: beyond this a query gets SERVFAIL at
/// once, so a flood of outside names (or a dead upstream) never delays the local ones.
pub const MAX_FORWARDED: usize = 64;

/// How long one upstream gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Time to live of the answers for instance names: short, since instances come and go.
const LOCAL_TTL_SECS: u32 = 10;

/// What happens to names that are not the network's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutsideNames {
    /// Forwarded to these resolvers, tried in order.
    Forward(Vec<SocketAddr>),
    /// Internal networks: not forwarded anywhere (Moby CVE-2024-29018), answered REFUSED.
    Refuse,
    /// No upstream resolver is known: NXDOMAIN.
    Unknown,
}

/// What one network's responder answers, and to whom.
pub struct ResponderConfig {
    pub lookup: Lookup,
    /// Queries are answered only from addresses of the network itself.
    pub clients: Subnet,
    pub outside: OutsideNames,
}

/// The host's upstream resolvers: the nameservers of /etc/resolv.conf. The daemon forwards
/// from the host's own namespace, so loopback resolvers (systemd-resolved) work too.
pub fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|address| address.trim().parse::<std::net::IpAddr>().ok())
        .map(|address| SocketAddr::new(address, 53))
        .collect()
}

/// Binds the responder's socket on `address`:53 (an error here is a clash to report).
pub async fn bind(address: Ipv4Addr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind((address, 53)).await
}

/// Serves on `socket` until the returned task is aborted. A panic while answering restarts
/// the serving loop on the same socket, so the network's names stay answered.
pub fn spawn(socket: UdpSocket, config: ResponderConfig) -> JoinHandle<()> {
    let socket = Arc::new(socket);
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            // Aborting this task drops the guard, which aborts the serving loop with it.
            let mut serving = AbortOnDrop(tokio::spawn(serve(socket.clone(), config.clone())));
            match (&mut serving.0).await {
                Err(e) if e.is_panic() => {
                    tracing::error!(clients = %config.clients, "the DNS responder panicked; restarting it");
                }
                _ => tracing::warn!(clients = %config.clients, "the DNS responder stopped; restarting it"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(socket: Arc<UdpSocket>, config: Arc<ResponderConfig>) {
    let forwarding = Arc::new(Semaphore::new(MAX_FORWARDED));
    // Forwarded lookups belong to this loop: they end with it.
    let mut forwards = JoinSet::new();
    let mut buffer = vec![0u8; 4096];
    loop {
        while forwards.try_join_next().is_some() {}
        let (length, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors and the like concern one datagram, not the socket.
                tracing::debug!(error = %e, "receiving a DNS query");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let std::net::IpAddr::V4(source) = from.ip() else {
            continue;
        };
        if !config.clients.contains(source) {
            continue;
        }
        let packet = &buffer[..length];
        match respond(packet, &config) {
            Action::Ignore => {}
            Action::Reply(reply) => {
                let _ = socket.send_to(&reply, from).await;
            }
            Action::Forward { id, upstreams } => match forwarding.clone().try_acquire_owned() {
                Ok(permit) => {
                    let query = packet.to_vec();
                    let socket = socket.clone();
                    forwards.spawn(async move {
                        let reply = match forward(&query, id, &upstreams).await {
                            Some(reply) => reply,
                            None => error_reply(&query, ResponseCode::ServFail),
                        };
                        let _ = socket.send_to(&reply, from).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::debug!("too many forwarded DNS lookups in flight; answering SERVFAIL");
                    let _ = socket.send_to(&error_reply(packet, ResponseCode::ServFail), from).await;
                }
            },
        }
    }
}

/// What to do with one datagram (public for the fuzz target in fuzz/).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Ignore,
    Reply(Vec<u8>),
    Forward { id: u16, upstreams: Vec<SocketAddr> },
}

pub fn respond(packet: &[u8], config: &ResponderConfig) -> Action {
    let query = match Message::from_vec(packet) {
        Ok(query) => query,
        // Not even a header: nobody to answer.
        Err(_) if packet.len() < 12 => return Action::Ignore,
        Err(_) => return Action::Reply(error_reply(packet, ResponseCode::FormErr)),
    };
    if query.metadata.message_type != MessageType::Query {
        return Action::Ignore;
    }
    if query.metadata.op_code != OpCode::Query {
        return Action::Reply(reply_to(&query, ResponseCode::NotImp, None));
    }
    let [question] = query.queries.as_slice() else {
        return Action::Reply(reply_to(&query, ResponseCode::FormErr, None));
    };
    let labels: Vec<String> = question
        .name()
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    let ours = labels.last().is_some_and(|last| last == "berth");
    let local = match labels.as_slice() {
        [name] => (config.lookup)(name),
        [name, zone] if zone == "berth" => (config.lookup)(name),
        _ => None,
    };
    if let Some(address) = local {
        if question.query_class() != DNSClass::IN {
            return Action::Reply(reply_to(&query, ResponseCode::Refused, None));
        }
        // The name exists; only A questions get a record.
        let answer = (question.query_type() == RecordType::A)
            .then(|| Record::from_rdata(question.name().clone(), LOCAL_TTL_SECS, RData::A(A(address))));
        return Action::Reply(reply_to(&query, ResponseCode::NoError, answer));
    }
    if ours {
        return Action::Reply(reply_to(&query, ResponseCode::NXDomain, None));
    }
    match &config.outside {
        OutsideNames::Forward(upstreams) if !upstreams.is_empty() => Action::Forward {
            id: query.metadata.id,
            upstreams: upstreams.clone(),
        },
        OutsideNames::Refuse => Action::Reply(reply_to(&query, ResponseCode::Refused, None)),
        OutsideNames::Forward(_) | OutsideNames::Unknown => {
            Action::Reply(reply_to(&query, ResponseCode::NXDomain, None))
        }
    }
}

/// A response to a parsed query: its question, `code`, and the answer if any.
fn reply_to(query: &Message, code: ResponseCode, answer: Option<Record>) -> Vec<u8> {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    reply.metadata = Metadata::response_from_request(&query.metadata);
    reply.metadata.authoritative = code == ResponseCode::NoError || code == ResponseCode::NXDomain;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.add_queries(query.queries.iter().cloned());
    if let Some(answer) = answer {
        reply.add_answer(answer);
    }
    if query.edns.is_some() {
        // A query with an OPT record gets one back (RFC 6891).
        reply.set_edns(Edns::new());
    }
    reply
        .to_vec()
        .unwrap_or_else(|_| error_reply(&query.metadata.id.to_be_bytes(), code))
}

/// A bare response (header only) to a datagram that may not parse: its id and `code`.
fn error_reply(packet: &[u8], code: ResponseCode) -> Vec<u8> {
    let id = match packet {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => 0,
    };
    let mut reply = Message::error_msg(id, OpCode::Query, code);
    reply.metadata.recursion_available = true;
    reply.to_vec().unwrap_or_default()
}

/// Sends `query` to each upstream in turn; the first well-formed response with its id wins.
/// Each try uses a fresh socket on a random port, and only the upstream's own address is
/// listened to, so a forged answer has to guess both.
async fn forward(query: &[u8], id: u16, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let local: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(local).await else {
            continue;
        };
        if socket.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buffer = vec![0u8; 65535];
        let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let (length, from) = socket.recv_from(&mut buffer).await.ok()?;
                if from != *upstream {
                    continue;
                }
                let reply = &buffer[..length];
                match Message::from_vec(reply) {
                    Ok(message)
                        if message.metadata.id == id && message.metadata.message_type == MessageType::Response =>
                    {
                        return Some(reply.to_vec())
                    }
                    _ => continue,
                }
            }
        })
        .await;
        if let Ok(Some(reply)) = answer {
            return Some(reply);
        }
        tracing::debug!(%upstream, "an upstream resolver did not answer");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(outside: OutsideNames) -> ResponderConfig {
        ResponderConfig {
            lookup: Arc::new(|name: &str| (name == "web").then_some(Ipv4Addr::new(10, 89, 0, 2))),
            clients: Subnet::parse("10.89.0.0/24").unwrap(),
            outside,
        }
    }

    /// A query for `name` with type `qtype`, id 0x1234, RD.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&1u16.to_be_bytes());
        packet
    }

    fn reply(action: Action) -> Message {
        match action {
            Action::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn answers_instance_names() {
        let config = config(OutsideNames::Unknown);
        for name in ["web", "WEB", "web.berth"] {
            let answer = reply(respond(&query(name, 1), &config));
            assert_eq!(answer.metadata.id, 0x1234);
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            assert!(answer.metadata.recursion_desired);
            assert_eq!(answer.answers.len(), 1, "{name}");
            assert_eq!(answer.answers[0].data, RData::A(A(Ipv4Addr::new(10, 89, 0, 2))));
        }
        // AAAA of a known name: it exists, without records of that type.
        let aaaa = reply(respond(&query("web", 28), &config));
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        let missing = reply(respond(&query("db.berth", 1), &config));
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn outside_names_follow_the_network() {
        let upstream: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let forwarded = respond(&query("example.com", 1), &config(OutsideNames::Forward(vec![upstream])));
        assert_eq!(
            forwarded,
            Action::Forward {
                id: 0x1234,
                upstreams: vec![upstream]
            }
        );
        let refused = reply(respond(&query("example.com", 1), &config(OutsideNames::Refuse)));
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        // .berth names are never forwarded, not even where there is an upstream.
        let ours = reply(respond(
            &query("db.berth", 1),
            &config(OutsideNames::Forward(vec![upstream])),
        ));
        assert_eq!(ours.metadata.response_code, ResponseCode::NXDomain);
        let unknown = reply(respond(&query("example.com", 1), &config(OutsideNames::Unknown)));
        assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn garbage_gets_formerr_or_nothing_and_never_a_panic() {
        let config = config(OutsideNames::Refuse);
        let full = query("web", 1);
        // Every truncation of a valid query, including the one without QCLASS that used to
        // panic the responder.
        for length in 0..full.len() {
            match respond(&full[..length], &config) {
                Action::Ignore => assert!(length < 12),
                Action::Reply(bytes) => {
                    let message = Message::from_vec(&bytes).unwrap();
                    assert_eq!(message.metadata.id, 0x1234);
                    assert_eq!(message.metadata.response_code, ResponseCode::FormErr, "length {length}");
                }
                Action::Forward { .. } => panic!("forwarded garbage"),
            }
        }
        // Compression loops, labels past the end, two questions, responses: all answered
        // safely or ignored.
        let mut looped = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
        assert!(matches!(respond(&looped, &config), Action::Reply(_)));
        looped[12] = 63;
        assert!(matches!(respond(&looped, &config), Action::Reply(_)));
        let mut two = query("web", 1);
        two[5] = 2;
        assert!(matches!(respond(&two, &config), Action::Reply(_)));
        let mut response = query("web", 1);
        response[2] |= 0x80;
        assert_eq!(respond(&response, &config), Action::Ignore);
        for seed in 0..2000u32 {
            let noise: Vec<u8> = (0..(seed % 64))
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7)) as u8)
                .collect();
            let _ = respond(&noise, &config);
        }
    }

    /// A panic while answering (here: in the lookup, once) restarts the responder on the same
    /// socket; the next query is answered.
    #[tokio::test]
    async fn a_panic_restarts_the_responder() {
        let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lookup: Lookup = {
            let panicked = panicked.clone();
            Arc::new(move |name: &str| {
                if !panicked.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    panic!("a failing lookup");
                }
                (name == "web").then_some(Ipv4Addr::new(10, 89, 0, 2))
            })
        };
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let responder = spawn(
            socket,
            ResponderConfig {
                lookup,
                clients: Subnet::parse("127.0.0.0/8").unwrap(),
                outside: OutsideNames::Unknown,
            },
        );
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buffer = [0u8; 512];
        let mut answers = 0;
        for _ in 0..20 {
            client.send_to(&query("web", 1), address).await.unwrap();
            if let Ok(Ok((length, _))) =
                tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buffer)).await
            {
                let reply = Message::from_vec(&buffer[..length]).unwrap();
                assert_eq!(reply.answers.len(), 1);
                answers += 1;
                break;
            }
        }
        assert!(panicked.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(answers, 1, "answered after the panic");
        responder.abort();
    }
}
