//! Which addresses HTTP validation refuses to connect to: everything that is not a public
//! unicast address (IANA special-purpose registries, as Boulder's list).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of non-public address `ip` is, or `None` for a public address.
pub(super) fn reserved_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => reserved_v4(v4),
        IpAddr::V6(v6) => reserved_v6(v6),
    }
}

/// (network, prefix length, kind), IPv4.
const RESERVED_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\" address"),
    ([10, 0, 0, 0], 8, "private address"),
    ([100, 64, 0, 0], 10, "shared (carrier-grade NAT) address"),
    ([127, 0, 0, 0], 8, "loopback address"),
    ([169, 254, 0, 0], 16, "link-local address"),
    ([172, 16, 0, 0], 12, "private address"),
    ([192, 0, 0, 0], 24, "IETF protocol assignment"),
    ([192, 0, 2, 0], 24, "documentation address"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast address"),
    ([192, 168, 0, 0], 16, "private address"),
    ([198, 18, 0, 0], 15, "benchmarking address"),
    ([198, 51, 100, 0], 24, "documentation address"),
    ([203, 0, 113, 0], 24, "documentation address"),
    ([224, 0, 0, 0], 4, "multicast address"),
    ([240, 0, 0, 0], 4, "reserved address"),
];

/// (network, prefix length, kind), IPv6.
const RESERVED_V6: &[([u16; 8], u8, &str)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified address"),
    ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback address"),
    ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64 address"),
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "NAT64 address"),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only address"),
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignment",
    ),
    (
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation address",
    ),
    ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 address"),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation address"),
    (
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "unique local (private) address",
    ),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local address"),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast address"),
];

fn reserved_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    RESERVED_V4.iter().find_map(|(net, len, kind)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        (bits & mask == u32::from(Ipv4Addr::from(*net)) & mask).then_some(*kind)
    })
}

fn reserved_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4-mapped address reaches the IPv4 host it embeds.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return reserved_v4(v4);
    }
    let bits = u128::from(ip);
    RESERVED_V6.iter().find_map(|(net, len, kind)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
        let [a, b, c, d, e, f, g, h] = *net;
        let net = u128::from(Ipv6Addr::new(a, b, c, d, e, f, g, h));
        (bits & mask == net & mask).then_some(*kind)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        reserved_kind(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_reserved() {
        assert_eq!(kind("127.0.0.1"), Some("loopback address"));
        assert_eq!(kind("10.1.2.3"), Some("private address"));
        assert_eq!(kind("172.31.255.255"), Some("private address"));
        assert_eq!(kind("192.168.0.1"), Some("private address"));
        assert_eq!(kind("169.254.169.254"), Some("link-local address"));
        assert_eq!(
            kind("100.100.0.1"),
            Some("shared (carrier-grade NAT) address")
        );
        assert_eq!(kind("192.0.2.1"), Some("documentation address"));
        assert_eq!(kind("255.255.255.255"), Some("reserved address"));
        assert_eq!(kind("::1"), Some("loopback address"));
        assert_eq!(kind("::"), Some("unspecified address"));
        assert_eq!(kind("fe80::1"), Some("link-local address"));
        assert_eq!(kind("fd00::1"), Some("unique local (private) address"));
        assert_eq!(kind("2001:db8::1"), Some("documentation address"));
        assert_eq!(kind("::ffff:10.0.0.1"), Some("private address"));
    }

    #[test]
    fn public_addresses_are_not_reserved() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }
}
