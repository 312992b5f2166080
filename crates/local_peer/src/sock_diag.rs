//! The exact lookup: one `SOCK_DIAG_BY_FAMILY` request over a `NETLINK_SOCK_DIAG` socket
//! names the TCP socket with the given four addresses, and the kernel answers with that
//! socket alone (its state, uid and inode), found in its hash table under the table's lock.
//!
//! Why not only `/proc/net/tcp`: that file is produced a page at a time, and between two
//! reads the kernel finds its place again by counting entries; while other connections come
//! and go (always, on a sensor) an entry can be skipped, so a live pot's socket can be
//! missed and its events taken for an unknown sender's. The exact lookup cannot miss a
//! socket that exists, and costs the same however many connections the machine holds.
//!
//! Messages are laid out by hand (`include/uapi/linux/inet_diag.h`, `netlink.h`): header
//! fields in the machine's byte order, ports and addresses in network order.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rustix::fd::OwnedFd;
use rustix::net::netlink::{SocketAddrNetlink, SOCK_DIAG};
use rustix::net::{
    recvfrom, sendto, socket_with, sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags,
    SocketType,
};

use crate::LIVE_STATES;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Both cookie words set: "any socket with these addresses", no cookie to compare.
const NO_COOKIE: [u8; 8] = [0xff; 8];
const ENOENT: i32 = 2;

const HEADER_LEN: usize = 16;
const REQUEST_LEN: usize = HEADER_LEN + 56;
/// `inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, expires, rqueue,
/// wqueue, uid, inode.
const ANSWER_LEN: usize = 72;

/// The kernel answers from memory at once; a lookup that waits longer than this is not
/// going to be answered (and the caller falls back to the tables).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the exact lookup gave no answer (the caller reads the tables instead).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// This kernel has no TCP socket diagnostics (no `NETLINK_SOCK_DIAG`, or no `tcp_diag`).
    NotSupported,
    /// The request or its answer failed (a signal, a timeout, a garbled answer).
    Failed,
}

/// The uid owning the live socket at `peer` connected to `local`: `Ok(None)` when no such
/// socket is open (the kernel said so), `Err` when the kernel could not be asked.
pub(crate) fn owner_of(peer: SocketAddr, local: SocketAddr) -> Result<Option<u32>, Unanswered> {
    if !supported() {
        return Err(Unanswered::NotSupported);
    }
    let socket = open().map_err(|_| Unanswered::Failed)?;
    let sequence = next_sequence();
    let request = exact_request(peer, local, sequence).ok_or(Unanswered::Failed)?;
    let mut buffer = [0u8; 1024];
    let answer = ask(&socket, &request, sequence, &mut buffer).ok_or(Unanswered::Failed)?;
    interpret_exact(answer, peer, local)
}

/// Whether this kernel answers TCP socket diagnostics, asked once per process: a dump
/// request for no states at all is answered with an empty list where TCP diagnostics exist
/// and with `ENOENT` where they do not (which, for an exact request, would be
/// indistinguishable from "no such socket").
fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(socket) = open() else {
            return false;
        };
        let sequence = next_sequence();
        let request = encode_request(NLM_F_REQUEST | NLM_F_DUMP, sequence, AF_INET, 0, &[0u8; 48]);
        let mut buffer = [0u8; 1024];
        matches!(
            ask(&socket, &request, sequence, &mut buffer),
            Some(Message {
                kind: NLMSG_DONE,
                ..
            })
        )
    })
}

fn open() -> rustix::io::Result<OwnedFd> {
    let socket = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(SOCK_DIAG),
    )?;
    sockopt::set_socket_timeout(&socket, sockopt::Timeout::Recv, Some(ANSWER_TIMEOUT))?;
    Ok(socket)
}

fn next_sequence() -> u32 {
    static SEQUENCE: AtomicU32 = AtomicU32::new(1);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// One netlink message of an answer: its type and payload.
#[derive(Debug, PartialEq, Eq)]
struct Message<'answer> {
    kind: u16,
    payload: &'answer [u8],
}

/// Sends `request` to the kernel and returns the first message answering `sequence`.
/// Datagrams from anyone but the kernel (netlink port 0) and messages answering other
/// requests are passed over.
fn ask<'buffer>(
    socket: &OwnedFd,
    request: &[u8],
    sequence: u32,
    buffer: &'buffer mut [u8],
) -> Option<Message<'buffer>> {
    sendto(
        socket,
        request,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )
    .ok()?;
    loop {
        let (_, length, sender) = recvfrom(socket, &mut *buffer, RecvFlags::empty()).ok()?;
        let from_kernel = sender
            .and_then(|sender| SocketAddrNetlink::try_from(sender).ok())
            .is_some_and(|sender| sender.pid() == 0);
        if !from_kernel {
            continue;
        }
        if let Some((offset, message_length)) = find_answer(&buffer[..length], sequence) {
            return Some(Message {
                kind: u16::from_ne_bytes([buffer[offset + 4], buffer[offset + 5]]),
                payload: &buffer[offset + HEADER_LEN..offset + message_length],
            });
        }
    }
}

/// Where, in one datagram, the message answering `sequence` starts, and its length.
fn find_answer(datagram: &[u8], sequence: u32) -> Option<(usize, usize)> {
    let mut offset = 0;
    while datagram.len() - offset >= HEADER_LEN {
        let header = &datagram[offset..offset + HEADER_LEN];
        let length = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if length < HEADER_LEN || offset + length > datagram.len() {
            return None;
        }
        if u32::from_ne_bytes(header[8..12].try_into().ok()?) == sequence {
            return Some((offset, length));
        }
        // Messages are aligned to four bytes.
        offset += length.div_ceil(4) * 4;
    }
    None
}

/// The request naming the socket whose own address is `peer` and whose remote one is
/// `local` (`None` when the two are of different families, which no socket is).
fn exact_request(peer: SocketAddr, local: SocketAddr, sequence: u32) -> Option<Vec<u8>> {
    let (family, id) = socket_id(peer, local)?;
    Some(encode_request(NLM_F_REQUEST, sequence, family, !0, &id))
}

/// `inet_diag_sockid` of the socket at `own` connected to `remote`. IPv4 (and v4-mapped)
/// addresses are asked as `AF_INET`: the kernel keeps connections of both families in one
/// table, so a dual-stack socket connected to a mapped address is found that way too.
fn socket_id(own: SocketAddr, remote: SocketAddr) -> Option<(u8, [u8; 48])> {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&own.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    let family = match (own.ip().to_canonical(), remote.ip().to_canonical()) {
        (IpAddr::V4(own), IpAddr::V4(remote)) => {
            id[4..8].copy_from_slice(&own.octets());
            id[20..24].copy_from_slice(&remote.octets());
            AF_INET
        }
        (IpAddr::V6(own), IpAddr::V6(remote)) => {
            id[4..20].copy_from_slice(&own.octets());
            id[20..36].copy_from_slice(&remote.octets());
            AF_INET6
        }
        _ => return None,
    };
    // Interface 0 (any), then the cookie.
    id[40..48].copy_from_slice(&NO_COOKIE);
    Some((family, id))
}

fn encode_request(flags: u16, sequence: u32, family: u8, states: u32, id: &[u8; 48]) -> Vec<u8> {
    let mut request = Vec::with_capacity(REQUEST_LEN);
    request.extend_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&sequence.to_ne_bytes());
    // Port 0: the kernel fills in ours.
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    request.extend_from_slice(&states.to_ne_bytes());
    request.extend_from_slice(id);
    request
}

/// The owner named by the kernel's answer to an exact request: the socket must be the one
/// asked for (same ports and addresses), live, and still held by a process (an inode), as
/// in the tables.
fn interpret_exact(
    answer: Message<'_>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Option<u32>, Unanswered> {
    match answer.kind {
        SOCK_DIAG_BY_FAMILY if answer.payload.len() >= ANSWER_LEN => {
            let payload = answer.payload;
            let (_, asked) = socket_id(peer, local).ok_or(Unanswered::Failed)?;
            // The addresses and ports; the interface and cookie are the socket's own.
            if payload[4..44] != asked[0..40] {
                return Ok(None);
            }
            let state = payload[1];
            let uid =
                u32::from_ne_bytes(payload[64..68].try_into().map_err(|_| Unanswered::Failed)?);
            let inode =
                u32::from_ne_bytes(payload[68..72].try_into().map_err(|_| Unanswered::Failed)?);
            Ok((inode != 0 && LIVE_STATES.contains(&state)).then_some(uid))
        }
        NLMSG_ERROR if answer.payload.len() >= 4 => {
            let error = i32::from_ne_bytes(
                answer.payload[0..4]
                    .try_into()
                    .map_err(|_| Unanswered::Failed)?,
            );
            if error == -ENOENT {
                Ok(None)
            } else {
                Err(Unanswered::Failed)
            }
        }
        _ => Err(Unanswered::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_live_loopback_connection_and_forgets_a_closed_one() {
        assert!(supported(), "this kernel answers TCP socket diagnostics");
        for host in ["127.0.0.1", "::1"] {
            let Ok(listener) = std::net::TcpListener::bind((host, 0)) else {
                continue; // no IPv6 on this machine
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, remote) = listener.accept().unwrap();
            let local = accepted.local_addr().unwrap();
            assert_eq!(owner_of(remote, local), Ok(Some(own_uid())), "{host}");
            // Our own end is not the peer's; an address nobody uses is nobody's.
            assert_eq!(owner_of(local, remote), Ok(Some(own_uid())), "{host}");
            let unrelated: SocketAddr = (remote.ip(), 1).into();
            assert_eq!(owner_of(unrelated, local), Ok(None), "{host}");
            drop(client);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while owner_of(remote, local) != Ok(None) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{host}: closed peer owned"
                );
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn an_ipv4_peer_seen_by_an_ipv6_listener_is_found_as_ipv4() {
        let Ok(listener) = std::net::TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this machine
        };
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        assert!(matches!(remote.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
        assert_eq!(
            owner_of(remote, accepted.local_addr().unwrap()),
            Ok(Some(own_uid()))
        );
    }

    fn answer(state: u8, id: &[u8; 48], uid: u32, inode: u32) -> Vec<u8> {
        let mut payload = vec![AF_INET, state, 0, 0];
        payload.extend_from_slice(id);
        payload.extend_from_slice(&[0u8; 12]);
        payload.extend_from_slice(&uid.to_ne_bytes());
        payload.extend_from_slice(&inode.to_ne_bytes());
        payload
    }

    #[test]
    fn only_a_live_held_socket_with_the_asked_addresses_names_an_owner() {
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let (_, id) = socket_id(peer, local).unwrap();
        let message = |payload: &[u8]| {
            interpret_exact(
                Message {
                    kind: SOCK_DIAG_BY_FAMILY,
                    payload,
                },
                peer,
                local,
            )
        };
        assert_eq!(message(&answer(0x01, &id, 1000, 77)), Ok(Some(1000)));
        // TIME_WAIT and orphans carry uid 0 and no inode: nobody's, not root's.
        assert_eq!(message(&answer(0x06, &id, 0, 0)), Ok(None));
        assert_eq!(message(&answer(0x05, &id, 0, 0)), Ok(None));
        // A listener on the peer's port answered in place of a connection.
        let (_, listener_id) = socket_id(peer, "0.0.0.0:0".parse().unwrap()).unwrap();
        assert_eq!(message(&answer(0x0A, &listener_id, 0, 5)), Ok(None));
        assert_eq!(message(&[0x02, 0x01]), Err(Unanswered::Failed));
        let error = |code: i32| {
            interpret_exact(
                Message {
                    kind: NLMSG_ERROR,
                    payload: &code.to_ne_bytes(),
                },
                peer,
                local,
            )
        };
        assert_eq!(error(-ENOENT), Ok(None));
        assert_eq!(error(-22), Err(Unanswered::Failed));
    }

    #[test]
    fn an_answer_is_found_by_its_sequence_and_garbled_lengths_are_refused() {
        let message = |sequence: u32, length: u32| {
            let mut bytes = length.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
            bytes.extend_from_slice(&0u16.to_ne_bytes());
            bytes.extend_from_slice(&sequence.to_ne_bytes());
            bytes.extend_from_slice(&0u32.to_ne_bytes());
            bytes.resize(length.max(16) as usize, 0);
            bytes
        };
        let mut datagram = message(7, 20);
        datagram.extend(message(8, 16));
        assert_eq!(find_answer(&datagram, 8), Some((20, 16)));
        assert_eq!(find_answer(&datagram, 9), None);
        assert_eq!(find_answer(&message(8, 4), 8), None);
        let mut overlong = message(8, 16);
        overlong[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert_eq!(find_answer(&overlong, 8), None);
        // Different families name no socket.
        assert_eq!(
            exact_request(
                "127.0.0.1:1".parse().unwrap(),
                "[2001:db8::1]:2".parse().unwrap(),
                1
            ),
            None
        );
    }
}
