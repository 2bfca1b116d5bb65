//! Sets: their key types, members as key ranges, and the layout the kernel needs (a hash
//! set for single keys, an interval set for ranges).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::PortRange;

/// The data type of a set's keys (nft's `type ...`), with the kernel's datatype number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    /// A TCP/UDP port (2 bytes, network byte order).
    InetService,
}

impl KeyType {
    /// nft's datatype numbers (`TYPE_IPADDR`, `TYPE_IP6ADDR`, `TYPE_INET_SERVICE`), stored
    /// by the kernel as `NFTA_SET_KEY_TYPE` so that `nft list` prints the elements right.
    pub fn datatype(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetService => 13,
        }
    }

    pub fn from_datatype(datatype: u32) -> Option<KeyType> {
        match datatype {
            7 => Some(KeyType::Ipv4Addr),
            8 => Some(KeyType::Ipv6Addr),
            13 => Some(KeyType::InetService),
            _ => None,
        }
    }

    /// Key length in bytes.
    pub fn byte_len(self) -> usize {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
        }
    }

    /// The largest key of this type.
    pub fn max(self) -> u128 {
        match self {
            KeyType::Ipv6Addr => u128::MAX,
            other => (1u128 << (8 * other.byte_len())) - 1,
        }
    }

    /// The key as the kernel stores it: big-endian, `len()` bytes.
    pub fn encode(self, key: u128) -> Vec<u8> {
        key.to_be_bytes()[16 - self.byte_len()..].to_vec()
    }

    pub fn decode(self, bytes: &[u8]) -> Option<u128> {
        if bytes.len() != self.byte_len() {
            return None;
        }
        Some(
            bytes
                .iter()
                .fold(0u128, |acc, b| (acc << 8) | u128::from(*b)),
        )
    }

    fn display(self, key: u128) -> String {
        match self {
            KeyType::Ipv4Addr => Ipv4Addr::from(key as u32).to_string(),
            KeyType::Ipv6Addr => Ipv6Addr::from(key).to_string(),
            KeyType::InetService => key.to_string(),
        }
    }
}

/// An inclusive range of keys (`first == last` for a single value), as host integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    pub first: u128,
    pub last: u128,
}

impl KeyRange {
    pub fn single(key: u128) -> KeyRange {
        KeyRange {
            first: key,
            last: key,
        }
    }

    pub fn is_single(&self) -> bool {
        self.first == self.last
    }

    pub fn from_ipv4_net(net: Ipv4Net) -> KeyRange {
        KeyRange {
            first: u128::from(u32::from(net.network())),
            last: u128::from(u32::from(net.broadcast())),
        }
    }

    pub fn from_ipv6_net(net: Ipv6Net) -> KeyRange {
        KeyRange {
            first: u128::from(net.network()),
            last: u128::from(net.broadcast()),
        }
    }

    pub fn from_ports(ports: PortRange) -> KeyRange {
        KeyRange {
            first: u128::from(ports.first),
            last: u128::from(ports.last),
        }
    }
}

/// A named set. Its elements are kept canonical: sorted, and for interval sets merged
/// (overlapping and adjacent ranges joined, which the kernel requires anyway), so a set
/// built from a configuration and one decoded from a dump compare as values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    pub name: String,
    pub key: KeyType,
    /// `flags interval`: ranges allowed. Without it the kernel uses a hash set.
    pub interval: bool,
    elements: Vec<KeyRange>,
}

impl Set {
    /// A set of the given members: a hash set when every member is a single value, an
    /// interval set otherwise.
    pub fn new(name: &str, key: KeyType, members: impl IntoIterator<Item = KeyRange>) -> Set {
        let members: Vec<KeyRange> = members.into_iter().collect();
        let interval = members.iter().any(|range| !range.is_single());
        Set::with_layout(name, key, interval, members)
    }

    /// A set with the interval flag given (what a dump says).
    pub fn with_layout(
        name: &str,
        key: KeyType,
        interval: bool,
        members: impl IntoIterator<Item = KeyRange>,
    ) -> Set {
        let mut members: Vec<KeyRange> = members
            .into_iter()
            .filter(|range| range.first <= range.last && range.last <= key.max())
            .collect();
        members.sort_unstable();
        if interval {
            // Merged in place: lists can be 100,000 long.
            members.dedup_by(|later, kept| {
                let touches = later.first <= kept.last.saturating_add(1);
                if touches {
                    kept.last = kept.last.max(later.last);
                }
                touches
            });
        } else {
            members.dedup();
        }
        let elements = members;
        Set {
            name: name.to_owned(),
            key,
            interval,
            elements,
        }
    }

    pub fn ipv4_networks(name: &str, nets: &[Ipv4Net]) -> Set {
        Set::new(
            name,
            KeyType::Ipv4Addr,
            nets.iter().map(|net| KeyRange::from_ipv4_net(*net)),
        )
    }

    pub fn ipv6_networks(name: &str, nets: &[Ipv6Net]) -> Set {
        Set::new(
            name,
            KeyType::Ipv6Addr,
            nets.iter().map(|net| KeyRange::from_ipv6_net(*net)),
        )
    }

    /// A port set is always an interval set, measured: for 2-byte keys the kernel picks
    /// its bitmap set type, whose insertion walks every element already in it, so 32,768
    /// separate ports took 4.1 s to commit as a hash set and 0.30 s as an interval set (and
    /// adjacent ports join into ranges). Address sets stay hash sets while every member is
    /// one address: 100,000 of them commit in 0.18 s as a hash set, 0.77 s as an interval
    /// set, and read back in 0.27 s against 1.76 s. (`commit_timings_for_the_seed_and_long_ignore_lists`.)
    pub fn ports(name: &str, ports: &[PortRange]) -> Set {
        Set::with_layout(
            name,
            KeyType::InetService,
            true,
            ports.iter().map(|range| KeyRange::from_ports(*range)),
        )
    }

    /// Sorted elements; disjoint and non-adjacent for an interval set.
    pub fn elements(&self) -> &[KeyRange] {
        &self.elements
    }
}

impl fmt::Display for Set {
    /// nft's spelling of the elements, for messages and debugging.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {} {{ ", self.name)?;
        for (i, range) in self.elements.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&self.key.display(range.first))?;
            if !range.is_single() {
                write!(f, "-{}", self.key.display(range.last))?;
            }
        }
        f.write_str(" }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u128, last: u128) -> KeyRange {
        KeyRange { first, last }
    }

    #[test]
    fn single_members_make_a_hash_set_and_ranges_an_interval_set() {
        let hash = Set::new("s", KeyType::InetService, [r(22, 22), r(23, 23), r(22, 22)]);
        assert!(!hash.interval);
        assert_eq!(hash.elements(), &[r(22, 22), r(23, 23)]);
        let interval = Set::new("s", KeyType::InetService, [r(23, 23), r(20, 22), r(30, 40)]);
        assert!(interval.interval);
        assert_eq!(interval.elements(), &[r(20, 23), r(30, 40)]);
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge_up_to_the_top_key() {
        let set = Set::new(
            "s",
            KeyType::Ipv4Addr,
            [
                r(10, 20),
                r(15, 30),
                r(31, 31),
                r(40, 50),
                r(0xffff_fff0, 0xffff_ffff),
            ],
        );
        assert_eq!(
            set.elements(),
            &[r(10, 31), r(40, 50), r(0xffff_fff0, 0xffff_ffff)]
        );
        let all6 = Set::new("s", KeyType::Ipv6Addr, [r(0, u128::MAX), r(5, 7)]);
        assert_eq!(all6.elements(), &[r(0, u128::MAX)]);
    }

    #[test]
    fn keys_encode_big_endian_at_their_width() {
        assert_eq!(KeyType::InetService.encode(9080), vec![0x23, 0x78]);
        assert_eq!(
            KeyType::Ipv4Addr.encode(0xa9fe_aa02),
            vec![169, 254, 170, 2]
        );
        assert_eq!(
            KeyType::Ipv4Addr.decode(&[169, 254, 170, 2]),
            Some(0xa9fe_aa02)
        );
        assert_eq!(KeyType::Ipv4Addr.decode(&[1, 2]), None);
        assert_eq!(KeyType::Ipv6Addr.encode(1).len(), 16);
    }

    #[test]
    fn display_spells_elements_like_nft() {
        let set = Set::ipv4_networks(
            "ign4",
            &[
                "10.0.0.0/8".parse().unwrap(),
                "169.254.170.2/32".parse().unwrap(),
            ],
        );
        assert_eq!(
            set.to_string(),
            "set ign4 { 10.0.0.0-10.255.255.255, 169.254.170.2 }"
        );
    }
}
