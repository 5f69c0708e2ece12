//! berth's DNS responder under attack: malformed queries (the short query without QCLASS that
//! used to panic it), a flood of outside names against a dead upstream, and outside names on
//! an internal network (Moby CVE-2024-29018) — with the upstream a listener of the test's own
//! on 127.0.0.1, so it can tell what was forwarded.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{stdout, Daemon};

/// A query for `name` (type A, class IN, RD) with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// The response code of a DNS reply.
fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

/// A socket inside a running container's network namespace: a neighbour on its network, as
/// the responder answers only those (the socket stays in that namespace on any thread).
fn client(d: &Daemon, container: &str) -> UdpSocket {
    let id = d.inspect(container)["id"].as_str().unwrap().to_string();
    let netns = d.state.join("netns").join(&id[..12]);
    berth_net::netns::run_in(&netns, || UdpSocket::bind("0.0.0.0:0"))
        .expect("entering the container's namespace")
        .expect("a socket there")
}

/// Asks the responder at `server`:53 from `socket` and waits for the reply with the same id.
fn ask(socket: &UdpSocket, server: Ipv4Addr, packet: &[u8]) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket.send_to(packet, (server, 53)).unwrap();
    let mut buffer = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok((length, _)) = socket.recv_from(&mut buffer) else {
            return None;
        };
        if length >= 12 && buffer[..2] == packet[..2] {
            return Some(buffer[..length].to_vec());
        }
    }
    None
}

/// The A record at the end of a one-answer reply.
fn answered_address(reply: &[u8]) -> Option<Ipv4Addr> {
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    (answers == 1 && reply.len() >= 4).then(|| {
        let end = reply.len();
        Ipv4Addr::new(reply[end - 4], reply[end - 3], reply[end - 2], reply[end - 1])
    })
}

/// A resolver on 127.0.0.1 of the test's own: counts what reaches it and, if `answer` is
/// set, answers A questions with that address (others with no records).
struct Upstream {
    port: u16,
    received: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(answer: Option<Ipv4Addr>) -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1500];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((length, from)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    received.fetch_add(1, Ordering::SeqCst);
                    let Some(address) = answer else { continue };
                    // Header and question back, with one A answer when it asked for A.
                    let packet = &buffer[..length];
                    let mut end = 12;
                    while end < length && packet[end] != 0 {
                        end += packet[end] as usize + 1;
                    }
                    end += 5;
                    if end > length {
                        continue;
                    }
                    let is_a = packet[end - 4..end - 2] == [0, 1];
                    let mut reply = packet[..end].to_vec();
                    reply[2] |= 0x80;
                    reply[3] = 0x80;
                    reply[6..12].copy_from_slice(&[0, is_a as u8, 0, 0, 0, 0]);
                    if is_a {
                        reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                        reply.extend_from_slice(&address.octets());
                    }
                    let _ = socket.send_to(&reply, from);
                }
            })
        };
        Upstream {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn config(&self) -> String {
        format!("[dns]\nupstreams = [\"127.0.0.1:{}\"]\n", self.port)
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn with_busybox(config: &str) -> Daemon {
    let d = Daemon::start_with_config(config);
    d.ok(&[
        "image",
        "import",
        "--tag",
        "busybox",
        crate::common::busybox_tar().to_str().unwrap(),
    ]);
    d
}

fn gateway_and_address(d: &Daemon, name: &str) -> (Ipv4Addr, Ipv4Addr) {
    let address = d.inspect(name)["address"].clone();
    (
        address["gateway"].as_str().unwrap().parse().unwrap(),
        address["address"].as_str().unwrap().parse().unwrap(),
    )
}

#[test]
fn malformed_queries_do_not_take_a_networks_names_away() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "600"]);
    let (gateway, web) = gateway_and_address(&d, "web");
    let good = query(0x4242, "web");
    let mut garbage: Vec<Vec<u8>> = vec![
        // The query a few bytes short (no QCLASS) that panicked the old responder.
        good[..good.len() - 2].to_vec(),
        good[..good.len() - 3].to_vec(),
        Vec::new(),
        vec![0x12],
        good[..12].to_vec(),
        // A compression pointer to itself, a label running past the end.
        vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1],
        vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', 0, 1, 0, 1],
        // A response (must not be answered), and a query with 65535 questions.
        {
            let mut response = good.clone();
            response[2] |= 0x80;
            response
        },
        {
            let mut many = good.clone();
            many[4..6].copy_from_slice(&[0xff, 0xff]);
            many
        },
    ];
    for seed in 0..300u32 {
        garbage.push(
            (0..(12 + seed % 40))
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 7) as u8)
                .collect(),
        );
    }
    let socket = client(&d, "web");
    for packet in &garbage {
        socket.send_to(packet, (gateway, 53)).unwrap();
    }
    // The short query gets FORMERR rather than silence or a crash.
    let socket = client(&d, "web");
    let short = ask(&socket, gateway, &good[..good.len() - 2]).expect("an answer to the short query");
    assert_eq!(rcode(&short), 1, "FORMERR");
    // Still answering, to the raw socket and to a container's resolver.
    let reply = ask(&socket, gateway, &good).expect("the responder still answers");
    assert_eq!(rcode(&reply), 0);
    assert_eq!(answered_address(&reply), Some(web));
    let looked_up = d.ok(&["run", "--rm", "busybox", "nslookup", "web"]);
    assert!(looked_up.contains(&web.to_string()), "{looked_up}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn forwarded_lookups_are_bounded_and_local_names_keep_answering() {
    // An upstream that never answers: every forwarded lookup waits for its timeout.
    let upstream = Upstream::start(None);
    let d = with_busybox(&upstream.config());
    d.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "600"]);
    let (gateway, web) = gateway_and_address(&d, "web");
    let flood = client(&d, "web");
    // Replies are counted as they come, so no socket buffer overflows.
    let counter = {
        let socket = flood.try_clone().unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let (mut servfail, mut buffer) = (0, [0u8; 512]);
            let deadline = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < deadline {
                if let Ok((length, _)) = socket.recv_from(&mut buffer) {
                    if length >= 12 && rcode(&buffer[..length]) == 2 {
                        servfail += 1;
                    }
                }
            }
            servfail
        })
    };
    let sent = 400;
    for i in 0..sent {
        flood
            .send_to(&query(i as u16, &format!("n{i}.example.org")), (gateway, 53))
            .unwrap();
        if i % 25 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Local names are answered at once while the lookups are in flight.
    let started = Instant::now();
    let asker = client(&d, "web");
    let reply = ask(&asker, gateway, &query(0x7777, "web")).expect("a local name during the flood");
    assert_eq!(answered_address(&reply), Some(web));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    // What is over the bound is answered SERVFAIL at once, not queued.
    let servfail = counter.join().unwrap();
    let forwarded = upstream.received();
    assert!(forwarded > 0, "outside names are forwarded at all");
    assert!(
        forwarded <= berth_net::dns::MAX_FORWARDED,
        "{forwarded} lookups in flight at once"
    );
    assert!(
        servfail + forwarded >= sent * 9 / 10,
        "{servfail} SERVFAIL, {forwarded} forwarded of {sent}"
    );
    let looked_up = d.ok(&["run", "--rm", "busybox", "nslookup", "web"]);
    assert!(looked_up.contains(&web.to_string()), "{looked_up}");
    // Once the upstream timeouts passed, lookups are forwarded again.
    std::thread::sleep(Duration::from_millis(2500));
    let before = upstream.received();
    let _ = ask(&asker, gateway, &query(0x8888, "later.example.org"));
    assert!(upstream.received() > before, "forwarding resumed");
}

#[test]
fn an_internal_network_never_forwards_outside_names() {
    let outside = Ipv4Addr::new(203, 0, 113, 7);
    let upstream = Upstream::start(Some(outside));
    let d = with_busybox(&upstream.config());
    // On a network with a way out, the outside name comes from the upstream.
    let resolved = d.run(&["run", "--rm", "busybox", "nslookup", "outside.example.org"]);
    assert!(
        stdout(&resolved).contains(&outside.to_string()),
        "{}",
        stdout(&resolved)
    );
    assert!(upstream.received() > 0);

    d.ok(&["network", "create", "--internal", "sealed"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "inner",
        "--network",
        "sealed",
        "busybox",
        "sleep",
        "600",
    ]);
    let (gateway, inner) = gateway_and_address(&d, "inner");
    let before = upstream.received();
    // Its own names resolve; outside names are REFUSED and never reach the upstream.
    let local = d.ok(&["run", "--rm", "--network", "sealed", "busybox", "nslookup", "inner"]);
    assert!(local.contains(&inner.to_string()), "{local}");
    let leaked = d.run(&[
        "run",
        "--rm",
        "--network",
        "sealed",
        "busybox",
        "nslookup",
        "outside.example.org",
    ]);
    assert!(!leaked.status.success(), "{}", stdout(&leaked));
    assert!(!stdout(&leaked).contains(&outside.to_string()), "{}", stdout(&leaked));
    let refused = ask(&client(&d, "inner"), gateway, &query(0x5151, "outside.example.org")).expect("an answer");
    assert_eq!(rcode(&refused), 5, "REFUSED");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        upstream.received(),
        before,
        "the upstream was asked from an internal network"
    );
    d.ok(&["rm", "-f", "inner"]);
}
