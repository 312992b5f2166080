//! Which addresses are worth looking up: special-purpose ranges have no country.
//!
//! A honeypot sees scanners from the Internet, but also its own host, containers on a
//! bridge, a carrier-grade NAT or a test suite on documentation addresses. Those ranges are
//! not anybody's location, and some geolocation sources do put a country on them (the
//! registry that holds the block), so they are cut here, before any database is asked.
//! The lists follow the IANA special-purpose address registries (RFC 6890 and successors);
//! `std`'s `is_global` would do it but is not stable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address to look up, or `None` for a special-purpose one. An IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4 peer) is the
/// IPv4 address it carries.
pub(crate) fn public_address(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4).then_some(IpAddr::V4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4).then_some(IpAddr::V4(v4)),
            None => is_public_v6(v6).then_some(IpAddr::V6(v6)),
        },
    }
}

/// IPv4 ranges that are not a location: (network, prefix length).
const SPECIAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", includes the unspecified address
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // carrier-grade NAT shared space (RFC 6598)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local
    ([172, 16, 0, 0], 12),   // private (RFC 1918)
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation TEST-NET-1
    ([192, 168, 0, 0], 16),  // private (RFC 1918)
    ([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
    ([198, 51, 100, 0], 24), // documentation TEST-NET-2
    ([203, 0, 113, 0], 24),  // documentation TEST-NET-3
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, includes the limited broadcast 255.255.255.255
];

/// IPv6 ranges that are not a location: (network, prefix length).
const SPECIAL_V6: &[(u128, u8)] = &[
    (0, 128),                     // unspecified ::
    (1, 128),                     // loopback ::1
    (0x0064_ff9b_0001 << 80, 48), // local-use NAT64 (RFC 8215)
    (0x0100 << 112, 64),          // discard-only (RFC 6666)
    (0x2001_0002_0000 << 80, 48), // benchmarking 2001:2::/48 (RFC 5180)
    (0x2001_0db8 << 96, 32),      // documentation (RFC 3849)
    (0x3fff << 112, 20),          // documentation (RFC 9637)
    (0xfc00 << 112, 7),           // unique local (private)
    (0xfe80 << 112, 10),          // link-local
    (0xfec0 << 112, 10),          // site-local (deprecated, still private)
    (0xff00 << 112, 8),           // multicast
];

fn is_public_v4(address: Ipv4Addr) -> bool {
    let value = u32::from(address);
    !SPECIAL_V4.iter().any(|&(network, prefix)| {
        let mask = u32::MAX << (32 - u32::from(prefix));
        value & mask == u32::from_be_bytes(network)
    })
}

fn is_public_v6(address: Ipv6Addr) -> bool {
    let value = u128::from(address);
    !SPECIAL_V6.iter().any(|&(network, prefix)| {
        // A shift by 128 overflows, so a /0 (none today) gets its mask spelled out.
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix))
        };
        value & mask == network
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        public_address(text.parse().expect("address")).is_some()
    }

    #[test]
    fn ranges_are_well_formed() {
        for &(network, prefix) in SPECIAL_V4 {
            let mask = u32::MAX << (32 - u32::from(prefix));
            assert_eq!(
                u32::from_be_bytes(network) & !mask,
                0,
                "{network:?}/{prefix}"
            );
        }
        for &(network, prefix) in SPECIAL_V6 {
            let host_bits = if prefix == 128 {
                0
            } else {
                u128::MAX >> prefix
            };
            assert_eq!(network & host_bits, 0, "{network:x}/{prefix}");
        }
    }

    #[test]
    fn edges_of_ranges() {
        assert!(!public("10.255.255.255"));
        assert!(public("11.0.0.0"));
        assert!(public("9.255.255.255"));
        assert!(!public("100.64.0.0"));
        assert!(!public("100.127.255.255"));
        assert!(public("100.128.0.0"));
        assert!(public("100.63.255.255"));
        assert!(!public("172.31.255.255"));
        assert!(public("172.32.0.0"));
        assert!(!public("198.19.255.255"));
        assert!(public("198.20.0.0"));
        assert!(public("223.255.255.255"));
        assert!(!public("224.0.0.0"));
        assert!(!public("2001:2::1"));
        assert!(public("2001:3::1"));
        assert!(!public("2001:db8:ffff::1"));
        assert!(public("2001:db9::1"));
        assert!(public("2a00::1"));
        assert!(!public("fdff::1"));
        assert!(public("fbff::1"));
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(
            public_address("::ffff:8.8.8.8".parse().expect("address")),
            Some("8.8.8.8".parse().expect("address"))
        );
        assert_eq!(
            public_address("::ffff:10.0.0.1".parse().expect("address")),
            None
        );
    }
}
