//! The egress guard: which addresses a webhook may be delivered to.
//!
//! A webhook URL is chosen by a customer, so without a guard it could point
//! the worker at internal services or the cloud metadata endpoint (SSRF).
//!
//! The ranges follow the IANA IPv4 and IPv6 Special-Purpose Address
//! Registries (RFC 6890 and its updates) and the IPv6 address space
//! registry: an address is public only if it is global unicast and not in a
//! special-purpose block that IANA marks as not globally reachable (plus a
//! few that are reachable but never a webhook receiver, such as the IETF
//! protocol assignments under `2001::/23`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// A range of addresses webhooks are not delivered to by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestrictedRange {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, unique local
    /// `fc00::/7` and the deprecated site-local `fec0::/10`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT, also used by some cloud metadata services).
    SharedCgnat,
    /// `169.254.0.0/16` (including the cloud metadata address
    /// `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0/8`, `::`, the limited broadcast `255.255.255.255` and
    /// multicast (`224.0.0.0/4`, `ff00::/8`).
    NonUnicast,
    /// Documentation and example ranges: `192.0.2.0/24` (TEST-NET-1),
    /// `198.51.100.0/24` (TEST-NET-2), `203.0.113.0/24` (TEST-NET-3),
    /// `2001:db8::/32` and `3fff::/20`.
    Documentation,
    /// Benchmarking: `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// Reserved, deprecated and protocol-specific blocks: `192.0.0.0/24`
    /// (IETF protocol assignments), `192.88.99.0/24` (deprecated 6to4
    /// relay anycast), `240.0.0.0/4` (reserved); IPv4-translated
    /// `::ffff:0:0:0/96`, IPv4-compatible `::/96` and local-use NAT64
    /// `64:ff9b:1::/48` addresses whose embedded IPv4 address is public,
    /// the IETF protocol assignments `2001::/23` (Teredo `2001::/32`,
    /// ORCHID, AMT, AS112, anycast services), SRv6 SIDs `5f00::/16`, and
    /// every IPv6 address outside global unicast `2000::/3` not named
    /// elsewhere (such as discard-only `100::/64`).
    Reserved,
}

impl fmt::Display for RestrictedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestrictedRange::Loopback => "loopback",
            RestrictedRange::Private => "private network",
            RestrictedRange::SharedCgnat => "shared (CGNAT) address space",
            RestrictedRange::LinkLocal => "link-local or cloud metadata",
            RestrictedRange::NonUnicast => "unspecified, broadcast or multicast",
            RestrictedRange::Documentation => "documentation",
            RestrictedRange::Benchmarking => "benchmarking",
            RestrictedRange::Reserved => "reserved or special-purpose",
        })
    }
}

/// An IPv4 block: first address and prefix length.
type V4Block = ([u8; 4], u8);

/// IPv4 special-purpose blocks, most specific first where they nest.
const V4_BLOCKS: &[(V4Block, RestrictedRange)] = &[
    (([0, 0, 0, 0], 8), RestrictedRange::NonUnicast),
    (([10, 0, 0, 0], 8), RestrictedRange::Private),
    (([100, 64, 0, 0], 10), RestrictedRange::SharedCgnat),
    (([127, 0, 0, 0], 8), RestrictedRange::Loopback),
    (([169, 254, 0, 0], 16), RestrictedRange::LinkLocal),
    (([172, 16, 0, 0], 12), RestrictedRange::Private),
    (([192, 0, 0, 0], 24), RestrictedRange::Reserved),
    (([192, 0, 2, 0], 24), RestrictedRange::Documentation),
    (([192, 88, 99, 0], 24), RestrictedRange::Reserved),
    (([192, 168, 0, 0], 16), RestrictedRange::Private),
    (([198, 18, 0, 0], 15), RestrictedRange::Benchmarking),
    (([198, 51, 100, 0], 24), RestrictedRange::Documentation),
    (([203, 0, 113, 0], 24), RestrictedRange::Documentation),
    (([224, 0, 0, 0], 4), RestrictedRange::NonUnicast),
    (([255, 255, 255, 255], 32), RestrictedRange::NonUnicast),
    (([240, 0, 0, 0], 4), RestrictedRange::Reserved),
];

/// An IPv6 block: first address (as segments) and prefix length.
type V6Block = ([u16; 8], u8);

/// IPv6 special-purpose blocks that do not embed an IPv4 address, most
/// specific first where they nest.
const V6_BLOCKS: &[(V6Block, RestrictedRange)] = &[
    (([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), RestrictedRange::Documentation),
    (([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), RestrictedRange::Documentation),
    (([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), RestrictedRange::Benchmarking),
    (([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), RestrictedRange::Reserved),
    (([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), RestrictedRange::Reserved),
    (([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), RestrictedRange::Private),
    (([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), RestrictedRange::LinkLocal),
    (([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), RestrictedRange::Private),
    (([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), RestrictedRange::NonUnicast),
];

fn in_v4(ip: Ipv4Addr, (first, len): V4Block) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(first)) & mask
}

fn in_v6(ip: Ipv6Addr, (first, len): V6Block) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(first)) & mask
}

/// The IPv4 address in the last 32 bits of `ip`.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    // Truncation keeps exactly the low 32 bits.
    Ipv4Addr::from(u128::from(ip) as u32)
}

impl RestrictedRange {
    /// The restricted range `ip` falls in, if any.
    ///
    /// IPv6 forms that embed an IPv4 address are judged by the embedded
    /// address: IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96` and 6to4
    /// `2002::/16` are as reachable as the address they carry; the
    /// IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d` and
    /// local-use NAT64 `64:ff9b:1::/48` forms are restricted in any case
    /// ([`Reserved`](RestrictedRange::Reserved) when the embedded address is
    /// public).
    pub fn of(ip: IpAddr) -> Option<RestrictedRange> {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<RestrictedRange> {
        V4_BLOCKS
            .iter()
            .find(|(block, _)| in_v4(ip, *block))
            .map(|(_, range)| *range)
    }

    fn of_v6(ip: Ipv6Addr) -> Option<RestrictedRange> {
        let segments = ip.segments();
        if ip.is_loopback() {
            return Some(RestrictedRange::Loopback);
        }
        if ip.is_unspecified() {
            return Some(RestrictedRange::NonUnicast);
        }
        // Reachable as the IPv4 address they carry.
        if in_v6(ip, ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96)) || in_v6(ip, ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)) {
            return Self::of_v4(low_v4(ip));
        }
        if segments[0] == 0x2002 {
            let v4 = Ipv4Addr::from((u32::from(segments[1]) << 16) | u32::from(segments[2]));
            return Self::of_v4(v4);
        }
        // Not globally reachable whatever they carry; named by the
        // embedded address when that is restricted itself.
        let translated = in_v6(ip, ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96));
        let compatible = in_v6(ip, ([0; 8], 96));
        let local_nat64 = in_v6(ip, ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48));
        if translated || compatible || local_nat64 {
            return Some(Self::of_v4(low_v4(ip)).unwrap_or(RestrictedRange::Reserved));
        }
        if let Some((_, range)) = V6_BLOCKS.iter().find(|(block, _)| in_v6(ip, *block)) {
            return Some(*range);
        }
        // Outside global unicast `2000::/3`, IANA has assigned nothing a
        // webhook could live on.
        if segments[0] & 0xe000 != 0x2000 {
            return Some(RestrictedRange::Reserved);
        }
        None
    }
}

/// Which destinations webhooks may reach: public unicast addresses over
/// `http` or `https`, plus the restricted ranges explicitly allowed.
///
/// The default ([`EgressPolicy::strict`]) refuses every
/// [`RestrictedRange`]. Tests that deliver to a local server allow
/// loopback; a deployment whose receivers live on a private network may
/// allow that too.
///
/// ```
/// use flagship_worker::flagship::notify::{EgressPolicy, RestrictedRange};
///
/// let strict = EgressPolicy::strict();
/// assert!(strict.check("93.184.215.14".parse().unwrap()).is_ok());
/// assert!(strict.check("169.254.169.254".parse().unwrap()).is_err());
/// assert!(strict.check("::ffff:127.0.0.1".parse().unwrap()).is_err());
/// let local = EgressPolicy::strict().allow(RestrictedRange::Loopback);
/// assert!(local.check("127.0.0.1".parse().unwrap()).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EgressPolicy {
    /// Ranges allowed despite being restricted.
    allowed: Vec<RestrictedRange>,
}

impl EgressPolicy {
    /// Public unicast addresses only.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Also allows `range`.
    pub fn allow(mut self, range: RestrictedRange) -> Self {
        if !self.allowed.contains(&range) {
            self.allowed.push(range);
        }
        self
    }

    /// Whether webhooks may be delivered to `ip`; the error says why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        match RestrictedRange::of(ip) {
            Some(range) if !self.allowed.contains(&range) => Err(format!(
                "webhook address {ip} is in a {range} range, which webhooks may not reach; use a public address (or allow the range in the egress policy)"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestrictedRange::*;

    fn range(ip: &str) -> Option<RestrictedRange> {
        RestrictedRange::of(ip.parse().unwrap())
    }

    /// Asserts every address in `inside` is in `expected` and every one in
    /// `outside` is public: one call per registry entry, with the block's
    /// edges and the first addresses past them.
    #[track_caller]
    fn block(expected: RestrictedRange, inside: &[&str], outside: &[&str]) {
        for ip in inside {
            assert_eq!(range(ip), Some(expected), "{ip} belongs to {expected:?}");
        }
        for ip in outside {
            assert_eq!(range(ip), None, "{ip} is public");
        }
    }

    // IPv4 Special-Purpose Address Registry, one test per entry.

    #[test]
    fn v4_this_network() {
        block(NonUnicast, &["0.0.0.0", "0.1.2.3", "0.255.255.255"], &["1.0.0.0"]);
    }

    #[test]
    fn v4_private_use() {
        block(
            Private,
            &[
                "10.0.0.0",
                "10.255.255.255",
                "172.16.0.0",
                "172.31.255.255",
                "192.168.0.0",
                "192.168.255.255",
            ],
            &[
                "9.255.255.255",
                "11.0.0.0",
                "172.15.255.255",
                "172.32.0.0",
                "192.167.255.255",
                "192.169.0.0",
            ],
        );
    }

    #[test]
    fn v4_shared_address_space() {
        block(
            SharedCgnat,
            &["100.64.0.0", "100.127.255.255"],
            &["100.63.255.255", "100.128.0.0"],
        );
    }

    #[test]
    fn v4_loopback() {
        block(
            Loopback,
            &["127.0.0.0", "127.0.0.1", "127.255.255.255"],
            &["126.255.255.255", "128.0.0.0"],
        );
    }

    #[test]
    fn v4_link_local_and_metadata() {
        block(
            LinkLocal,
            &["169.254.0.0", "169.254.169.254", "169.254.255.255"],
            &["169.253.255.255", "169.255.0.0"],
        );
    }

    #[test]
    fn v4_ietf_protocol_assignments() {
        // DS-Lite 192.0.0.0/29, dummy 192.0.0.8, NAT64 discovery 192.0.0.170.
        block(
            Reserved,
            &["192.0.0.0", "192.0.0.8", "192.0.0.170", "192.0.0.255"],
            &["191.255.255.255", "192.0.1.0"],
        );
    }

    #[test]
    fn v4_documentation() {
        block(
            Documentation,
            &[
                "192.0.2.0",
                "192.0.2.255",
                "198.51.100.0",
                "198.51.100.255",
                "203.0.113.0",
                "203.0.113.255",
            ],
            &[
                "192.0.3.0",
                "198.51.99.255",
                "198.51.101.0",
                "203.0.112.255",
                "203.0.114.0",
            ],
        );
    }

    #[test]
    fn v4_deprecated_6to4_relay_anycast() {
        block(
            Reserved,
            &["192.88.99.0", "192.88.99.255"],
            &["192.88.98.255", "192.88.100.0"],
        );
    }

    #[test]
    fn v4_benchmarking() {
        block(
            Benchmarking,
            &["198.18.0.0", "198.19.255.255"],
            &["198.17.255.255", "198.20.0.0"],
        );
    }

    #[test]
    fn v4_multicast() {
        block(
            NonUnicast,
            &["224.0.0.0", "224.0.0.1", "239.255.255.255"],
            &["223.255.255.255"],
        );
    }

    #[test]
    fn v4_reserved_for_future_use() {
        block(Reserved, &["240.0.0.0", "250.1.2.3", "255.255.255.254"], &[]);
    }

    #[test]
    fn v4_limited_broadcast() {
        block(NonUnicast, &["255.255.255.255"], &[]);
    }

    #[test]
    fn v4_public_addresses_pass() {
        // AS112 (192.31.196.0/24, 192.175.48.0/24) and AMT (192.52.193.0/24)
        // are globally reachable in the registry.
        block(
            Private,
            &[],
            &[
                "8.8.8.8",
                "1.1.1.1",
                "93.184.215.14",
                "192.31.196.1",
                "192.52.193.1",
                "192.175.48.1",
            ],
        );
    }

    // IPv6 Special-Purpose Address Registry (and the address space outside
    // global unicast), one test per entry.

    #[test]
    fn v6_loopback_and_unspecified() {
        block(Loopback, &["::1"], &[]);
        block(NonUnicast, &["::"], &[]);
    }

    #[test]
    fn v6_ipv4_mapped_is_judged_by_the_embedded_address() {
        block(Loopback, &["::ffff:127.0.0.1", "::ffff:7f00:1"], &["::ffff:8.8.8.8"]);
        block(LinkLocal, &["::ffff:169.254.169.254"], &[]);
        block(Private, &["::ffff:10.0.0.1"], &[]);
        block(Documentation, &["::ffff:192.0.2.1"], &[]);
    }

    #[test]
    fn v6_ipv4_translated_is_never_public() {
        block(Loopback, &["::ffff:0:7f00:1", "::ffff:0:127.0.0.1"], &[]);
        block(LinkLocal, &["::ffff:0:a9fe:a9fe"], &[]);
        block(Reserved, &["::ffff:0:808:808"], &[]);
    }

    #[test]
    fn v6_ipv4_compatible_is_never_public() {
        block(Loopback, &["::127.0.0.1"], &[]);
        block(Private, &["::10.0.0.1"], &[]);
        block(Reserved, &["::8.8.8.8"], &[]);
    }

    #[test]
    fn v6_nat64_well_known_prefix_is_judged_by_the_embedded_address() {
        block(LinkLocal, &["64:ff9b::a9fe:a9fe"], &["64:ff9b::808:808"]);
        block(Loopback, &["64:ff9b::127.0.0.1"], &[]);
    }

    #[test]
    fn v6_nat64_local_use_prefix_is_never_public() {
        block(Reserved, &["64:ff9b:1::808:808", "64:ff9b:1:abcd::808:808"], &[]);
        block(Private, &["64:ff9b:1::a00:1"], &[]);
    }

    #[test]
    fn v6_discard_only_and_dummy_prefixes() {
        block(Reserved, &["100::", "100::ffff:ffff:ffff:ffff", "100:0:0:1::1"], &[]);
    }

    #[test]
    fn v6_ietf_protocol_assignments_teredo_and_orchid() {
        block(
            Reserved,
            &[
                "2001::", // Teredo
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "2001:1::1",        // PCP anycast
                "2001:3::1",        // AMT
                "2001:4:112::1",    // AS112-v6
                "2001:10::1",       // ORCHID (deprecated)
                "2001:20::1",       // ORCHIDv2
                "2001:30::1",       // DRIP
                "2001:1ff:ffff::1", // the last of 2001::/23
            ],
            &["2001:200::1", "2001:4860:4860::8888"],
        );
    }

    #[test]
    fn v6_benchmarking() {
        block(Benchmarking, &["2001:2::", "2001:2:0:ffff::1"], &[]);
        block(Reserved, &["2001:2:1::1"], &[]);
    }

    #[test]
    fn v6_documentation() {
        block(
            Documentation,
            &["2001:db8::", "2001:db8:ffff::1", "3fff::", "3fff:fff:ffff::1"],
            &["2001:db9::1", "3fff:1000::1"],
        );
    }

    #[test]
    fn v6_6to4_is_judged_by_the_embedded_address() {
        block(Private, &["2002:0a00:0001::1"], &["2002:0808:0808::1"]);
        block(Loopback, &["2002:7f00:1::1"], &[]);
        block(Documentation, &["2002:c000:0201::1"], &[]);
    }

    #[test]
    fn v6_srv6_sids() {
        block(Reserved, &["5f00::1", "5f00:ffff::1"], &[]);
    }

    #[test]
    fn v6_unique_local_and_site_local() {
        block(
            Private,
            &["fc00::1", "fd00:ec2::254", "fdff:ffff::1", "fec0::1", "feff::1"],
            &[],
        );
    }

    #[test]
    fn v6_link_local() {
        block(LinkLocal, &["fe80::1", "febf:ffff::1"], &[]);
    }

    #[test]
    fn v6_multicast() {
        block(NonUnicast, &["ff02::1", "ff0e::1"], &[]);
    }

    #[test]
    fn v6_outside_global_unicast_is_reserved() {
        block(
            Reserved,
            &["::1:0:0:1", "200::1", "4000::1", "e000::1", "1fff:ffff::1"],
            &[],
        );
        block(Reserved, &[], &["2000::1", "2606:4700::1111", "3ffe::1"]);
    }

    #[test]
    fn the_strict_policy_refuses_what_the_issue_found_public() {
        // Issue 11, item 15: IPv4-translated loopback and TEST-NET-1 passed.
        let strict = EgressPolicy::strict();
        for ip in [
            "::ffff:0:7f00:1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "192.0.0.170",
            "192.88.99.1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001::1",
            "2001:20::1",
            "64:ff9b:1::808:808",
            "100::1",
            "5f00::1",
            "fec0::1",
            "::8.8.8.8",
        ] {
            assert!(strict.check(ip.parse().unwrap()).is_err(), "{ip} was let through");
        }
        for ip in [
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(strict.check(ip.parse().unwrap()).is_ok(), "{ip} is public");
        }
    }

    #[test]
    fn allowing_one_range_keeps_the_others_refused() {
        let policy = EgressPolicy::strict().allow(RestrictedRange::Loopback);
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::1".parse().unwrap()).is_ok());
        let err = policy.check("10.0.0.1".parse().unwrap()).unwrap_err();
        assert!(err.contains("private network"), "{err}");
        assert!(policy.check("169.254.169.254".parse().unwrap()).is_err());
        let err = policy.check("192.0.2.1".parse().unwrap()).unwrap_err();
        assert!(err.contains("documentation"), "{err}");
    }
}
