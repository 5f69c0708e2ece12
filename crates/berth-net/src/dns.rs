//! A small DNS responder for a network's gateway address: A records for the names of the
//! instances on that network (`name` and `name.berth`); other questions go to the host's
//! upstream resolver when there is one, else get NXDOMAIN.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

/// Answers a name on the network, if an instance has it.
pub type Lookup = Arc<dyn Fn(&str) -> Option<Ipv4Addr> + Send + Sync>;

/// The question of a query: (name, type, end offset of the question).
fn question(packet: &[u8]) -> Option<(String, u16, usize)> {
    if packet.len() < 12 || u16::from_be_bytes([packet[4], packet[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// The reply to `query` with `address` (or NXDOMAIN when none).
fn answer(query: &[u8], end: usize, address: Option<Ipv4Addr>) -> Vec<u8> {
    let mut reply = query[..end].to_vec();
    reply[2] = 0x84 | (query[2] & 0x01); // response, authoritative, keep RD
    reply[3] = if address.is_some() { 0x00 } else { 0x03 }; // NOERROR / NXDOMAIN
    reply[6..8].copy_from_slice(&(address.is_some() as u16).to_be_bytes());
    reply[8..12].copy_from_slice(&[0, 0, 0, 0]);
    if let Some(address) = address {
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 10, 0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    reply
}

fn upstream() -> Option<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
        .map(|a| SocketAddr::from((a, 53)))
}

async fn forward(query: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.send_to(query, to).await.ok()?;
    let mut buffer = vec![0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer))
        .await
        .ok()?
        .ok()?;
    buffer.truncate(n);
    Some(buffer)
}

/// Serves on `address`:53 until the task is dropped.
pub async fn serve(address: Ipv4Addr, lookup: Lookup) -> std::io::Result<()> {
    let socket = Arc::new(UdpSocket::bind((address, 53)).await?);
    let upstream = upstream();
    let mut buffer = vec![0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buffer).await?;
        let query = buffer[..n].to_vec();
        let Some((name, qtype, end)) = question(&query) else {
            continue;
        };
        let short = name.strip_suffix(".berth").unwrap_or(&name).to_string();
        let found = if !short.contains('.') { lookup(&short) } else { None };
        let socket = socket.clone();
        match (found, upstream) {
            (Some(address), _) => {
                let address = (qtype == 1).then_some(address);
                let mut reply = answer(&query, end, address);
                if qtype != 1 {
                    reply[3] = 0; // the name exists, without records of that type
                }
                let _ = socket.send_to(&reply, from).await;
            }
            (None, Some(upstream)) if !name.ends_with(".berth") => {
                tokio::spawn(async move {
                    let reply = forward(&query, upstream)
                        .await
                        .unwrap_or_else(|| answer(&query, end, None));
                    let _ = socket.send_to(&reply, from).await;
                });
            }
            (None, _) => {
                let _ = socket.send_to(&answer(&query, end, None), from).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_records() {
        // id 0x1234, RD, one question: web IN A
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1,
        ];
        let (name, qtype, end) = question(&query).unwrap();
        assert_eq!((name.as_str(), qtype, end), ("web", 1, query.len()));
        let reply = answer(&query, end, Some(Ipv4Addr::new(10, 89, 0, 2)));
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[3] & 0x0f, 0);
        assert_eq!(&reply[reply.len() - 4..], &[10, 89, 0, 2]);
        let missing = answer(&query, end, None);
        assert_eq!(missing[3] & 0x0f, 3);
    }
}
