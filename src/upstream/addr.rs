//! Which addresses a call may be dialled to. A pure function over an address,
//! so that every refusal is tested without sending a packet anywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    Loopback,
    Private,
    LinkLocal,
    CloudMetadata,
    SharedAddressSpace,
    UniqueLocal,
    Multicast,
    Unspecified,
    Broadcast,
    Reserved,
    Documentation,
}

impl Restricted {
    pub fn describe(self) -> &'static str {
        match self {
            Restricted::Loopback => "a loopback address",
            Restricted::Private => "a private (RFC 1918) address",
            Restricted::LinkLocal => "a link-local address",
            Restricted::CloudMetadata => "the cloud metadata address",
            Restricted::SharedAddressSpace => "a carrier-grade NAT (100.64/10) address",
            Restricted::UniqueLocal => "an IPv6 unique-local (fc00::/7) address",
            Restricted::Multicast => "a multicast address",
            Restricted::Unspecified => "the unspecified address",
            Restricted::Broadcast => "the broadcast address",
            Restricted::Reserved => "a reserved address",
            Restricted::Documentation => "a documentation address",
        }
    }
}

/// `None` for a public unicast address; otherwise why it is restricted.
/// IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by the address they carry.
pub fn classify(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Restricted> {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Some(Restricted::CloudMetadata);
    }
    let class = match (a, b, c) {
        (0, _, _) => Restricted::Unspecified,
        (10, _, _) => Restricted::Private,
        (127, _, _) => Restricted::Loopback,
        (169, 254, _) => Restricted::LinkLocal,
        (172, 16..=31, _) => Restricted::Private,
        (192, 168, _) => Restricted::Private,
        (100, 64..=127, _) => Restricted::SharedAddressSpace,
        (192, 0, 0) => Restricted::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Restricted::Documentation,
        (198, 18..=19, _) => Restricted::Reserved,
        (224..=239, _, _) => Restricted::Multicast,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => Restricted::Broadcast,
        (240..=255, _, _) => Restricted::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Restricted> {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some(Restricted::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Restricted::Loopback);
    }
    if seg[0] & 0xfe00 == 0xfc00 {
        return Some(Restricted::UniqueLocal);
    }
    if seg[0] & 0xffc0 == 0xfe80 {
        return Some(Restricted::LinkLocal);
    }
    // fec0::/10, deprecated site-local: private in practice.
    if seg[0] & 0xffc0 == 0xfec0 {
        return Some(Restricted::Private);
    }
    if seg[0] & 0xff00 == 0xff00 {
        return Some(Restricted::Multicast);
    }
    if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        return Some(Restricted::Documentation);
    }
    // Teredo (2001::/32) hides an obfuscated IPv4 client address; refuse it
    // rather than decode it. 100::/64 is the discard prefix.
    if (seg[0] == 0x2001 && seg[1] == 0) || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) {
        return Some(Restricted::Reserved);
    }
    // Anything outside 2000::/3 is not global unicast.
    if seg[0] & 0xe000 != 0x2000 {
        return Some(Restricted::Reserved);
    }
    None
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let from =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // ::ffff:a.b.c.d (mapped)
    if seg[..5] == [0, 0, 0, 0, 0] && seg[5] == 0xffff {
        return Some(from(seg[6], seg[7]));
    }
    // ::a.b.c.d (compatible, deprecated), excluding :: and ::1
    if seg[..6] == [0, 0, 0, 0, 0, 0] && (seg[6] != 0 || seg[7] > 1) {
        return Some(from(seg[6], seg[7]));
    }
    // 64:ff9b::/96 (NAT64 well-known prefix) and 64:ff9b:1::/48 (local use)
    if seg[0] == 0x0064 && seg[1] == 0xff9b && (seg[2..6] == [0, 0, 0, 0] || seg[2] == 1) {
        return Some(from(seg[6], seg[7]));
    }
    // 2002::/16 (6to4): the IPv4 address sits in bits 16..48
    if seg[0] == 0x2002 {
        return Some(from(seg[1], seg[2]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<Restricted>)] = &[
            ("1.1.1.1", None),
            ("104.18.7.192", None),
            ("2606:4700::6810:7c0", None),
            ("127.0.0.1", Some(Restricted::Loopback)),
            ("127.255.0.9", Some(Restricted::Loopback)),
            ("::1", Some(Restricted::Loopback)),
            ("10.0.0.1", Some(Restricted::Private)),
            ("172.16.0.1", Some(Restricted::Private)),
            ("172.31.255.255", Some(Restricted::Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Restricted::Private)),
            ("169.254.169.254", Some(Restricted::CloudMetadata)),
            ("169.254.1.1", Some(Restricted::LinkLocal)),
            ("100.64.0.1", Some(Restricted::SharedAddressSpace)),
            ("100.127.255.255", Some(Restricted::SharedAddressSpace)),
            ("100.128.0.1", None),
            ("0.0.0.0", Some(Restricted::Unspecified)),
            ("224.0.0.1", Some(Restricted::Multicast)),
            ("255.255.255.255", Some(Restricted::Broadcast)),
            ("240.0.0.1", Some(Restricted::Reserved)),
            ("fc00::1", Some(Restricted::UniqueLocal)),
            ("fd12:3456::1", Some(Restricted::UniqueLocal)),
            ("fe80::1", Some(Restricted::LinkLocal)),
            ("ff02::1", Some(Restricted::Multicast)),
            ("::", Some(Restricted::Unspecified)),
            ("::ffff:10.0.0.1", Some(Restricted::Private)),
            ("::ffff:127.0.0.1", Some(Restricted::Loopback)),
            ("::ffff:169.254.169.254", Some(Restricted::CloudMetadata)),
            ("::ffff:8.8.8.8", None),
            ("::10.0.0.1", Some(Restricted::Private)),
            ("64:ff9b::10.0.0.1", Some(Restricted::Private)),
            ("64:ff9b::a9fe:a9fe", Some(Restricted::CloudMetadata)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:0a00:0001::1", Some(Restricted::Private)),
            ("2002:a9fe:a9fe::", Some(Restricted::CloudMetadata)),
            ("2002:0808:0808::1", None),
            ("2001:db8::1", Some(Restricted::Documentation)),
            ("2001:0:4136:e378::1", Some(Restricted::Reserved)),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *want, "{text}");
        }
    }
}
