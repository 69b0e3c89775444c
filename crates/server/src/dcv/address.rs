//! Which addresses HTTP validation refuses to connect to: everything that is not a public
//! unicast address (IANA special-purpose registries, as Boulder's list).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of non-public address `ip` is, or `None` for a public address.
pub(crate) fn reserved_kind(ip: IpAddr) -> Option<&'static str> {
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
    // The other forms that embed an IPv4 address can reach it too (a stack that still
    // honours the deprecated forms, a translator, a relay): the embedded address is held
    // to the IPv4 rules first, so `::7f00:1` is refused as the loopback address it names.
    // A public embedded address does not make them public: the forms stay refused below
    // (or, for IPv4-compatible and IPv4-translated addresses, here: deprecated forms no
    // validation target has a reason to use).
    if let Some((v4, form)) = embedded_v4(ip) {
        return Some(reserved_v4(v4).unwrap_or(form));
    }
    let bits = u128::from(ip);
    RESERVED_V6.iter().find_map(|(net, len, kind)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
        let [a, b, c, d, e, f, g, h] = *net;
        let net = u128::from(Ipv6Addr::new(a, b, c, d, e, f, g, h));
        (bits & mask == net & mask).then_some(*kind)
    })
}

/// The IPv4 address an IPv6 address embeds, with the name of its form, for every form
/// but the IPv4-mapped one (handled by the caller): IPv4-compatible `::a.b.c.d` (RFC 4291,
/// deprecated; `::` and `::1` excepted), IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765),
/// NAT64 `64:ff9b::a.b.c.d` and `64:ff9b:1::/48` (RFC 6052, 8215; the address in the
/// low 32 bits, as the well-known prefix's /96 layout puts it) and 6to4 `2002:AABB:CCDD::/48`
/// (RFC 3056).
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some((low, "IPv4-compatible IPv6 address (deprecated)")),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some((low, "IPv4-translated IPv6 address")),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => Some((low, "NAT64 address")),
        [0x2002, hi, lo, ..] => Some((
            Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8),
            "6to4 address",
        )),
        _ => None,
    }
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
    fn ipv6_forms_embedding_ipv4_are_held_to_the_ipv4_rules() {
        // IPv4-compatible and IPv4-translated forms of 127.0.0.1, 10.0.0.1, 169.254.169.254.
        assert_eq!(kind("::7f00:1"), Some("loopback address"));
        assert_eq!(kind("::127.0.0.1"), Some("loopback address"));
        assert_eq!(kind("::a00:1"), Some("private address"));
        assert_eq!(kind("::ffff:0:7f00:1"), Some("loopback address"));
        assert_eq!(kind("::ffff:0:a9fe:a9fe"), Some("link-local address"));
        // NAT64 and 6to4 of a reserved address say which one; of a public one, the form.
        assert_eq!(kind("64:ff9b::7f00:1"), Some("loopback address"));
        assert_eq!(kind("64:ff9b:1::a00:1"), Some("private address"));
        assert_eq!(kind("2002:7f00:1::1"), Some("loopback address"));
        assert_eq!(kind("2002:c0a8:101::"), Some("private address"));
        assert_eq!(kind("64:ff9b::101:101"), Some("NAT64 address"));
        assert_eq!(kind("2002:101:101::1"), Some("6to4 address"));
        // The deprecated forms are refused even around a public address.
        assert_eq!(
            kind("::101:101"),
            Some("IPv4-compatible IPv6 address (deprecated)")
        );
        assert_eq!(
            kind("::ffff:0:101:101"),
            Some("IPv4-translated IPv6 address")
        );
        // `::` and `::1` keep their own names.
        assert_eq!(kind("::"), Some("unspecified address"));
        assert_eq!(kind("::1"), Some("loopback address"));
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
