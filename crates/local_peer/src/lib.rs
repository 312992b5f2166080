//! Who is on the other end of a TCP connection from this machine: the unix user owning the
//! peer's socket (the socket whose local address is the connection's remote one and whose
//! remote address is our local one), asked of the kernel by its four addresses
//! ([`sock_diag`]), or, where the kernel has no socket diagnostics, read from
//! `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! A local process can bind any of 127.0.0.0/8 and write anything into what it sends, but
//! it cannot change the uid its sockets belong to. The node's ingest trusts it to know
//! which pot sent an event; the Core counts connections from this machine per uid, so a
//! pot's user cannot take every slot by using many loopback addresses.
//!
//! Only a live socket names its owner. Once a process closed its end, the kernel keeps the
//! connection as an orphan (`FIN_WAIT1`, `FIN_WAIT2`, … with inode 0) or as a `TIME_WAIT`
//! entry, and names uid 0 for both: read naively, a pot's user that connects, writes and
//! closes at once would pass for root. Sockets without an inode or in a state no open
//! socket is in are therefore passed over, and such a peer's owner is unknown (`None`).
//!
//! The tables of a sensor are large by design (every attacker's connection to every pot is
//! in them) and change all the time, which is why the exact lookup comes first: it costs
//! the same whatever the tables hold and cannot miss a socket that exists, where a reading
//! of the tables can (see [`sock_diag`]). The fallback reads them line by line, stops at the
//! first live match and reads only the table the peer's address family can be in first.
//! Both block: callers on an async runtime use its blocking pool.
//!
//! Linux only (elsewhere every lookup answers `None`); no `unsafe`, the netlink socket is
//! rustix's.

mod sock_diag;

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TABLE_V4: &str = "/proc/net/tcp";
const TABLE_V6: &str = "/proc/net/tcp6";

/// Socket states (the `st` column, `include/net/tcp_states.h`) of a socket that a process
/// still holds when its peer looks it up: established, or closing with the file still open
/// (`FIN_WAIT1`/`FIN_WAIT2` after `shutdown`, `CLOSE_WAIT`, `LAST_ACK`, `CLOSING`).
/// `TIME_WAIT`, `CLOSE`, `LISTEN` and the `SYN_*` states are never the peer of an accepted
/// connection that a process owns.
pub(crate) const LIVE_STATES: [u8; 6] = [0x01, 0x04, 0x05, 0x08, 0x09, 0x0B];

/// The uid owning the socket at `peer` that is connected to `local`, if it is on this
/// machine and still open (`None` for a remote peer, when the peer's end is already closed
/// or gone, or when neither the kernel nor the tables can be asked). Blocking.
pub fn peer_socket_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    match sock_diag::owner_of(peer, local) {
        Ok(owner) => owner,
        Err(_) => owner_from_tables(peer, local),
    }
}

/// The fallback: the owner as `/proc/net/tcp` and `tcp6` list it.
fn owner_from_tables(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    tables_for(peer)
        .into_iter()
        .find_map(|table| find_owner_in_file(table, peer, local))
}

/// Which tables can hold the socket at `peer`, the likely one first. An IPv6 peer (not
/// v4-mapped) has an IPv6 socket: only `tcp6`. An IPv4 peer, or a v4-mapped one as an
/// IPv6 listener sees it, usually has an IPv4 socket (`tcp`), but may be an IPv6 socket
/// connected to a v4-mapped address, which `tcp6` lists: that table is read only when the
/// first has no live match.
fn tables_for(peer: SocketAddr) -> Vec<&'static str> {
    match peer.ip() {
        IpAddr::V4(_) => vec![TABLE_V4, TABLE_V6],
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => vec![TABLE_V4, TABLE_V6],
        IpAddr::V6(_) => vec![TABLE_V6],
    }
}

fn find_owner_in_file(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let file = std::fs::File::open(table).ok()?;
    find_owner(std::io::BufReader::new(file), peer, local)
}

/// Reads one table line by line (one reused buffer, nothing collected) and answers the
/// owner of the first live socket `peer` → `local`.
fn find_owner(mut table: impl BufRead, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let mut line = String::new();
    // The header.
    table.read_line(&mut line).ok()?;
    loop {
        line.clear();
        match table.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let Some(uid) = live_owner_of_line(&line, peer, local) {
            return Some(uid);
        }
    }
}

/// The uid of a table line describing a live socket `peer` → `local`.
/// Columns: `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …`.
fn live_owner_of_line(line: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let mut fields = line.split_whitespace();
    let socket_local = parse_address(fields.nth(1)?)?;
    if !same(socket_local, peer) {
        return None;
    }
    let socket_remote = parse_address(fields.next()?)?;
    if !same(socket_remote, local) {
        return None;
    }
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    // tx:rx, tr:when and retrnsmt.
    let uid: u32 = fields.nth(3)?.parse().ok()?;
    // timeout, then inode.
    let inode: u64 = fields.nth(1)?.parse().ok()?;
    (inode != 0 && LIVE_STATES.contains(&state)).then_some(uid)
}

fn same(left: SocketAddr, right: SocketAddr) -> bool {
    left.port() == right.port() && left.ip().to_canonical() == right.ip().to_canonical()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints each 32-bit
/// word of the address as a number in the machine's byte order, the port in hex.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |index: usize| -> Option<[u8; 4]> {
        let chunk = address.get(index * 8..index * 8 + 8)?;
        Some(u32::from_str_radix(chunk, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for index in 0..4 {
                bytes[index * 4..index * 4 + 4].copy_from_slice(&word(index)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_real_loopback_connection_is_found_by_both_ways() {
        for host in ["127.0.0.1", "::1"] {
            let Ok(listener) = std::net::TcpListener::bind((host, 0)) else {
                continue; // no IPv6 on this machine
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, remote) = listener.accept().unwrap();
            assert_eq!(remote, client.local_addr().unwrap());
            let local = accepted.local_addr().unwrap();
            assert_eq!(peer_socket_uid(remote, local), Some(own_uid()), "{host}");
            assert_eq!(owner_from_tables(remote, local), Some(own_uid()), "{host}");
            // The node's own end of the connection is not mistaken for the peer's.
            let unrelated: SocketAddr = (remote.ip(), 1).into();
            assert_eq!(peer_socket_uid(unrelated, local), None);
            assert_eq!(owner_from_tables(unrelated, local), None);
        }
    }

    /// The failure the exact lookup exists for: while other connections open and close,
    /// a live peer is found every time.
    #[test]
    fn a_live_peer_is_found_every_time_while_other_connections_come_and_go() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let address = busy.local_addr().unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let held: Vec<_> = (0..50)
                        .filter_map(|_| std::net::TcpStream::connect(address).ok())
                        .collect();
                    let accepted: Vec<_> = held.iter().filter_map(|_| busy.accept().ok()).collect();
                    drop((held, accepted));
                }
            }
        });
        let missed = (0..500)
            .filter(|_| peer_socket_uid(remote, local) != Some(own_uid()))
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(missed, 0, "a live peer was missed {missed} times in 500");
    }

    fn own_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    #[test]
    fn addresses_are_read_in_the_kernels_format() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:D431 0100007F:238C 01 00000000:00000000 00:00000000 00000000  1234        0 1 1 0 10 0\n";
        if cfg!(target_endian = "little") {
            let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
            let local: SocketAddr = "127.0.0.1:9100".parse().unwrap();
            assert_eq!(find_owner(table.as_bytes(), peer, local), Some(1234));
            assert_eq!(find_owner(table.as_bytes(), local, peer), None);
        }
    }

    #[test]
    fn closed_sockets_the_kernel_shows_as_roots_name_no_owner() {
        if !cfg!(target_endian = "little") {
            return;
        }
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        // TIME_WAIT (06): uid and inode 0, as the kernel prints every one.
        let time_wait = "   0: 0100007F:D431 0100007F:238C 06 00000000:00000000 03:00001769 00000000     0        0 0 3 0000000000000000\n";
        // An orphan (FIN_WAIT2, 05) after the process closed its socket: inode 0, uid 0.
        let orphan = "   1: 0100007F:D431 0100007F:238C 05 00000000:00000000 03:00001769 00000000     0        0 0 3 0000000000000000\n";
        // A listening socket never is a connection's peer.
        let listening = "   2: 0100007F:D431 0100007F:238C 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000\n";
        // The live socket (a reused port) with its real owner, after the stale entries.
        let live = "   3: 0100007F:D431 0100007F:238C 01 00000000:00000000 00:00000000 00000000    65534        0 777 1 0000000000000000\n";
        for stale in [time_wait, orphan, listening] {
            let table = format!("{header}{stale}");
            assert_eq!(find_owner(table.as_bytes(), peer, local), None, "{stale}");
        }
        let table = format!("{header}{time_wait}{orphan}{live}");
        assert_eq!(find_owner(table.as_bytes(), peer, local), Some(65534));
        // A socket closed after shutdown(SHUT_WR) by a process that still holds it keeps
        // its inode and owner (FIN_WAIT2 with inode): still its user's.
        let half_closed = "   4: 0100007F:D431 0100007F:238C 05 00000000:00000000 00:00000000 00000000    1000        0 778 1 0000000000000000\n";
        let table = format!("{header}{half_closed}");
        assert_eq!(find_owner(table.as_bytes(), peer, local), Some(1000));
        // Truncated and garbled lines are skipped, not trusted.
        let table = format!("{header}   5: 0100007F:D431 0100007F:238C 01\n garbage\n{live}");
        assert_eq!(find_owner(table.as_bytes(), peer, local), Some(65534));
    }

    #[test]
    fn an_ipv6_address_is_read_and_the_tables_follow_the_peers_family() {
        // ::1 as the kernel prints it on a little-endian machine.
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_address("00000000000000000000000001000000:1F90"),
                Some("[::1]:8080".parse().unwrap())
            );
        }
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("0100007:1F90"), None);
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(tables_for(v4), [TABLE_V4, TABLE_V6]);
        assert_eq!(tables_for(mapped), [TABLE_V4, TABLE_V6]);
        assert_eq!(tables_for(v6), [TABLE_V6]);
    }

    #[test]
    fn a_peer_that_closed_its_end_is_no_longer_anyones() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(peer_socket_uid(remote, local), Some(own_uid()));
        // Closed by its process: the kernel keeps an orphan (FIN_WAIT2, inode 0, uid 0).
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while peer_socket_uid(remote, local).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "a closed peer still has an owner"
            );
            std::thread::yield_now();
        }
        drop(accepted);
    }
}
