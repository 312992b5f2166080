//! Whom a connection counts against: an address group (one IPv4 address, one IPv6 /64, or
//! — for a connection from this machine — the unix user owning the peer's socket).
//!
//! On this machine addresses say nothing: any local user can bind all of 127.0.0.0/8. With
//! `honeybee up` the pots' users share the machine with the Core and the node, so a
//! connection from this machine counts against the unix user owning its socket instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The unit a per-address cap counts: one IPv4 address, or one IPv6 /64 (the smallest
/// network a site is usually given, so an attacker holding one cannot multiply its share
/// by using more of its addresses); for a connection from this machine, the unix user
/// owning the peer's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressGroup {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// A connection from this machine, by the uid owning the peer's socket.
    LocalUser(u32),
    /// A connection from this machine whose owner is unknown: the peer already closed its
    /// end (the kernel shows a closed socket as root's, `honeybee-local-peer` does not
    /// believe it), `/proc` is not readable, or a loopback address known without its
    /// connection. All of these share one group of their own, never equal to any user's
    /// (root's included), so none of them gets a share per address and none of them counts
    /// against — or as — the real node's source.
    Loopback,
}

impl AddressGroup {
    /// The group of `address` known without its connection: loopback addresses all fall
    /// into [`AddressGroup::Loopback`]. Connections are grouped by [`AddressGroup::of_connection`].
    pub fn of(address: IpAddr) -> Self {
        let address = address.to_canonical();
        if address.is_loopback() {
            return AddressGroup::Loopback;
        }
        match address {
            IpAddr::V4(v4) => AddressGroup::V4(v4),
            IpAddr::V6(v6) => AddressGroup::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }

    /// The group of the connection from `remote` to our `local` address: for a peer on this
    /// machine (a loopback address, or our own address) the uid owning its socket. The
    /// socket tables are read on the blocking pool: on a sensor they are large, and a pot
    /// connecting in a loop must not stall the runtime's threads.
    pub async fn of_connection(remote: SocketAddr, local: SocketAddr) -> Self {
        let remote_ip = remote.ip().to_canonical();
        if !Self::from_this_machine(remote_ip, local) {
            return Self::of(remote_ip);
        }
        let owner = tokio::task::spawn_blocking(move || {
            honeybee_local_peer::peer_socket_uid(remote, local)
        })
        .await
        .ok()
        .flatten();
        Self::of_connection_with(remote, local, |_, _| owner)
    }

    fn from_this_machine(remote_ip: IpAddr, local: SocketAddr) -> bool {
        remote_ip.is_loopback() || remote_ip == local.ip().to_canonical()
    }

    fn of_connection_with(
        remote: SocketAddr,
        local: SocketAddr,
        owner: impl FnOnce(SocketAddr, SocketAddr) -> Option<u32>,
    ) -> Self {
        let remote_ip = remote.ip().to_canonical();
        if !Self::from_this_machine(remote_ip, local) {
            return Self::of(remote_ip);
        }
        match owner(remote, local) {
            Some(uid) => AddressGroup::LocalUser(uid),
            None => AddressGroup::Loopback,
        }
    }
}

impl std::fmt::Display for AddressGroup {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressGroup::V4(v4) => write!(formatter, "{v4}"),
            AddressGroup::V6Prefix(prefix) => {
                let network = std::net::Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(formatter, "{network}/64")
            }
            AddressGroup::LocalUser(uid) => write!(formatter, "local uid {uid}"),
            AddressGroup::Loopback => write!(formatter, "local, owner unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_counts_as_ipv4_and_groups_print_readably() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            AddressGroup::of(mapped),
            AddressGroup::of("192.0.2.1".parse().unwrap())
        );
        let v6 = AddressGroup::of("2001:db8::1".parse().unwrap());
        assert_eq!(v6.to_string(), "2001:db8::/64");
    }

    #[test]
    fn connections_from_this_machine_are_grouped_by_the_owner_of_their_socket() {
        let core: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let owned_by = |uid: Option<u32>| move |_: SocketAddr, _: SocketAddr| uid;
        // Every loopback address, IPv4, IPv6 or mapped, is the same user's.
        for peer in [
            "127.0.0.2:40000",
            "127.9.8.7:40000",
            "[::1]:40000",
            "[::ffff:127.0.0.3]:40000",
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            assert_eq!(
                AddressGroup::of_connection_with(peer, core, owned_by(Some(1000))),
                AddressGroup::LocalUser(1000),
                "{peer}"
            );
            // Owner unknown: one shared group, never a group per address.
            assert_eq!(
                AddressGroup::of_connection_with(peer, core, owned_by(None)),
                AddressGroup::Loopback,
                "{peer}"
            );
        }
        // Our own non-loopback address is this machine too.
        let public_core: SocketAddr = "192.0.2.10:9001".parse().unwrap();
        let own: SocketAddr = "192.0.2.10:40000".parse().unwrap();
        assert_eq!(
            AddressGroup::of_connection_with(own, public_core, owned_by(Some(7))),
            AddressGroup::LocalUser(7)
        );
        // A remote peer is never looked up.
        let remote: SocketAddr = "198.51.100.4:40000".parse().unwrap();
        let never =
            |_: SocketAddr, _: SocketAddr| -> Option<u32> { panic!("looked up a remote peer") };
        assert_eq!(
            AddressGroup::of_connection_with(remote, public_core, never),
            AddressGroup::V4("198.51.100.4".parse().unwrap())
        );
        assert_eq!(
            AddressGroup::of("127.0.0.5".parse().unwrap()),
            AddressGroup::Loopback
        );
        assert_eq!(AddressGroup::LocalUser(1000).to_string(), "local uid 1000");
    }

    #[tokio::test]
    async fn the_owner_of_a_real_loopback_connection_is_its_group_until_it_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        let group = AddressGroup::of_connection(remote, local).await;
        // /proc/self belongs to this process's effective uid.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!(group, AddressGroup::LocalUser(uid));
        // Once the peer closed its end, the kernel shows its socket as root's: unknown.
        drop(client);
        assert_eq!(
            AddressGroup::of_connection(remote, local).await,
            AddressGroup::Loopback
        );
        assert_ne!(AddressGroup::Loopback, AddressGroup::LocalUser(0));
    }
}
