//! The egress guard: which addresses a webhook may be delivered to.
//!
//! A webhook URL is chosen by a customer, so without a guard it could point
//! the worker at internal services or the cloud metadata endpoint (SSRF).

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
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT, also used by some cloud metadata services).
    SharedCgnat,
    /// `169.254.0.0/16` (including the cloud metadata address
    /// `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0/8`, `::`, broadcast, multicast and the reserved `240.0.0.0/4`.
    NonUnicast,
}

impl fmt::Display for RestrictedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestrictedRange::Loopback => "loopback",
            RestrictedRange::Private => "private network",
            RestrictedRange::SharedCgnat => "shared (CGNAT) address space",
            RestrictedRange::LinkLocal => "link-local or cloud metadata",
            RestrictedRange::NonUnicast => "unspecified, broadcast, multicast or reserved",
        })
    }
}

impl RestrictedRange {
    /// The restricted range `ip` falls in, if any. IPv6 forms that embed an
    /// IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
    /// `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the
    /// embedded address.
    pub fn of(ip: IpAddr) -> Option<RestrictedRange> {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<RestrictedRange> {
        let [a, b, ..] = ip.octets();
        if ip.is_loopback() {
            Some(RestrictedRange::Loopback)
        } else if ip.is_private() {
            Some(RestrictedRange::Private)
        } else if a == 100 && (64..128).contains(&b) {
            Some(RestrictedRange::SharedCgnat)
        } else if ip.is_link_local() {
            Some(RestrictedRange::LinkLocal)
        } else if a == 0 || a >= 224 {
            // 0/8 "this network", 224/4 multicast, 240/4 reserved, broadcast.
            Some(RestrictedRange::NonUnicast)
        } else {
            None
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Option<RestrictedRange> {
        let segments = ip.segments();
        if ip.is_loopback() {
            return Some(RestrictedRange::Loopback);
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Some(RestrictedRange::NonUnicast);
        }
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let embedded_tail = || Ipv4Addr::from(((u32::from(segments[6])) << 16) | u32::from(segments[7]));
        // IPv4-compatible (deprecated) ::a.b.c.d, and NAT64 64:ff9b::a.b.c.d.
        if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            return Self::of_v4(embedded_tail());
        }
        if segments[0] == 0x2002 {
            let v4 = Ipv4Addr::from((u32::from(segments[1]) << 16) | u32::from(segments[2]));
            return Self::of_v4(v4);
        }
        if segments[0] & 0xfe00 == 0xfc00 {
            return Some(RestrictedRange::Private);
        }
        if segments[0] & 0xffc0 == 0xfe80 {
            return Some(RestrictedRange::LinkLocal);
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

    fn range(ip: &str) -> Option<RestrictedRange> {
        RestrictedRange::of(ip.parse().unwrap())
    }

    #[test]
    fn restricted_ranges_are_recognised() {
        use RestrictedRange::*;
        let cases = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.1", None),
            ("0.0.0.0", Some(NonUnicast)),
            ("255.255.255.255", Some(NonUnicast)),
            ("224.0.0.1", Some(NonUnicast)),
            ("8.8.8.8", None),
            ("::1", Some(Loopback)),
            ("::", Some(NonUnicast)),
            ("fc00::1", Some(Private)),
            ("fd00:ec2::254", Some(Private)),
            ("fe80::1", Some(LinkLocal)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("2002:0a00:0001::1", Some(Private)),
            ("2606:4700::1111", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(range(ip), expected, "{ip}");
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
    }
}
