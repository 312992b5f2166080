//! Who is on the other end of a TCP connection from this machine: the unix user owning the
//! peer's socket, read from `/proc/net/tcp` and `/proc/net/tcp6` (the socket whose local
//! address is the connection's remote one and whose remote address is our local one).
//!
//! A local process can bind any of 127.0.0.0/8 and write anything into what it sends, but
//! it cannot change the uid its sockets belong to. The node's ingest trusts it to know
//! which pot sent an event; the Core counts connections from this machine per uid, so a
//! pot's user cannot take every slot by using many loopback addresses.
//!
//! Linux only (elsewhere the tables do not exist and every lookup answers `None`); no
//! dependencies beyond std.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];
/// The `st` column of a socket in TIME_WAIT. The kernel keeps only a small record of such a
/// socket, without its owner, and prints uid 0 for it: taken at its word, a sender that
/// closed before we looked would count as root.
const TIME_WAIT: &str = "06";

/// The uid owning the socket at `peer` that is connected to `local`, if it is on this
/// machine (`None` for a remote peer, when the connection is already gone, or when the
/// tables cannot be read).
pub fn peer_socket_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    TABLES.iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        find_owner(&text, peer, local)
    })
}

/// Searches one table's text for the socket `peer` → `local`; one in TIME_WAIT has no owner
/// any more (see [`TIME_WAIT`]).
fn find_owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let socket_local = parse_address(fields.get(1)?)?;
        let socket_remote = parse_address(fields.get(2)?)?;
        let owned = fields.get(3).is_some_and(|state| *state != TIME_WAIT);
        (owned && same(socket_local, peer) && same(socket_remote, local))
            .then(|| fields.get(7)?.parse().ok())
            .flatten()
    })
}

fn same(left: SocketAddr, right: SocketAddr) -> bool {
    left.port() == right.port() && left.ip().to_canonical() == right.ip().to_canonical()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints each 32-bit
/// word of the address as a number in the machine's byte order, the port in hex.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = address
        .as_bytes()
        .chunks(8)
        .map(|chunk| {
            let chunk = std::str::from_utf8(chunk).ok()?;
            Some(u32::from_str_radix(chunk, 16).ok()?.to_ne_bytes())
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_real_loopback_connection_is_found() {
        for host in ["127.0.0.1", "::1"] {
            let Ok(listener) = std::net::TcpListener::bind((host, 0)) else {
                continue; // no IPv6 on this machine
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, remote) = listener.accept().unwrap();
            assert_eq!(remote, client.local_addr().unwrap());
            let uid = peer_socket_uid(remote, accepted.local_addr().unwrap());
            assert_eq!(uid, Some(own_uid()), "{host}");
            // The node's own end of the connection is not mistaken for the peer's.
            let unrelated: SocketAddr = (remote.ip(), 1).into();
            assert_eq!(
                peer_socket_uid(unrelated, accepted.local_addr().unwrap()),
                None
            );
        }
    }

    /// This process's effective uid, from `/proc/self/status` (`Uid: real effective …`), so
    /// the crate needs nothing beyond std even in its tests.
    fn own_uid() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn addresses_are_read_in_the_kernels_format() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:D431 0100007F:238C 01 00000000:00000000 00:00000000 00000000  1234        0 1 1 0 10 0\n";
        if cfg!(target_endian = "little") {
            let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
            let local: SocketAddr = "127.0.0.1:9100".parse().unwrap();
            assert_eq!(find_owner(table, peer, local), Some(1234));
            assert_eq!(find_owner(table, local, peer), None);
            // The same socket in TIME_WAIT, as the kernel prints it: uid 0, inode 0.
            let time_wait = table
                .replace(" 01 00000000", " 06 00000000")
                .replace("  1234 ", "     0 ");
            assert_eq!(find_owner(&time_wait, peer, local), None);
        }
    }
}
