//! Port lists: single ports and ranges, with duplicates collapsed and rendering into
//! `multiport` lists of at most 15 slots each (a range takes two slots).

use std::fmt;

use crate::config::settings::trim_value;
use crate::error::{ConfigError, quote};

/// The kernel's `multiport` match holds at most this many slots (`XT_MULTI_PORTS`).
pub const MULTIPORT_SLOTS: usize = 15;

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Slots this entry takes in a `multiport` match.
    pub fn multiport_slots(&self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }
}

impl fmt::Display for PortRange {
    /// iptables spelling: `80` or `8000:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// An ordered list of port ranges in which no two entries share a port: overlapping entries
/// (duplicates, covered ones, partial overlaps) are merged into one, which takes the place of
/// the first of them. The user's order is otherwise kept, and adjacent entries stay apart, so
/// small lists render exactly as the App Mesh tools do. Built in O(n log n): lists can hold
/// every port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(Vec<PortRange>);

impl PortList {
    pub fn from_ranges(ranges: impl IntoIterator<Item = PortRange>) -> Self {
        let ranges: Vec<PortRange> = ranges.into_iter().collect();
        let mut by_start: Vec<usize> = (0..ranges.len()).collect();
        by_start.sort_by_key(|&i| (ranges[i].first, i));
        // (position of the group's first member in the user's list, the merged range)
        let mut groups: Vec<(usize, PortRange)> = Vec::new();
        for i in by_start {
            let range = ranges[i];
            match groups.last_mut() {
                Some((position, merged)) if range.first <= merged.last => {
                    merged.last = merged.last.max(range.last);
                    *position = (*position).min(i);
                }
                _ => groups.push((i, range)),
            }
        }
        groups.sort_by_key(|(position, _)| *position);
        PortList(groups.into_iter().map(|(_, range)| range).collect())
    }

    /// Adds a range, merging it with any entry it overlaps.
    pub fn push(&mut self, range: PortRange) {
        let ranges = std::mem::take(&mut self.0);
        *self = PortList::from_ranges(ranges.into_iter().chain([range]));
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|range| range.contains(port))
    }

    /// Splits the list into `multiport --dports` arguments of at most 15 slots each; never
    /// truncates (the AWS plugin kept only the first 15 ports).
    pub fn multiport_chunks(&self) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut slots = 0;
        for range in &self.0 {
            if slots + range.multiport_slots() > MULTIPORT_SLOTS {
                chunks.push(current.join(","));
                current.clear();
                slots = 0;
            }
            slots += range.multiport_slots();
            current.push(range.to_string());
        }
        if !current.is_empty() {
            chunks.push(current.join(","));
        }
        chunks
    }

    /// The number of individual ports covered.
    pub fn port_count(&self) -> usize {
        self.0
            .iter()
            .map(|r| usize::from(r.last - r.first) + 1)
            .sum()
    }
}

/// Parses one port number (1-65535); `verbatim` is the whole property value for the message.
pub fn parse_port(property: &str, verbatim: &str, item: &str) -> Result<u16, ConfigError> {
    let bad = || {
        ConfigError::new(
            property,
            Some(verbatim),
            format!("{} is not a port number (1-65535)", quote(item)),
        )
    };
    if item.is_empty() || item.len() > 5 || !item.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match item.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(bad()),
    }
}

/// Parses `80`, `8000-8080` (App Mesh style) or `8000:8080` (iptables style).
pub fn parse_port_range(
    property: &str,
    verbatim: &str,
    item: &str,
) -> Result<PortRange, ConfigError> {
    let Some((first, last)) = item.split_once(['-', ':']) else {
        return Ok(PortRange::single(parse_port(property, verbatim, item)?));
    };
    let bad_range = |why: &str| {
        ConfigError::new(
            property,
            Some(verbatim),
            format!("{} is not a port range: {why}", quote(item)),
        )
    };
    let bound = |text: &str| {
        parse_port(property, verbatim, trim_value(text))
            .map_err(|_| bad_range("write FIRST-LAST with ports 1-65535"))
    };
    let (first, last) = (bound(first)?, bound(last)?);
    if first > last {
        return Err(bad_range("the first port is above the last"));
    }
    Ok(PortRange { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> PortList {
        PortList::from_ranges(items.iter().map(|i| parse_port_range("P", "v", i).unwrap()))
    }

    #[test]
    fn sixteen_ports_split_into_two_multiport_rules() {
        let ports: Vec<String> = (5000..5016).map(|p| p.to_string()).collect();
        let refs: Vec<&str> = ports.iter().map(String::as_str).collect();
        let chunks = list(&refs).multiport_chunks();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].split(',').count(), 15);
        assert_eq!(chunks[1], "5015");
    }

    #[test]
    fn ranges_take_two_slots() {
        let items: Vec<String> = (0..8)
            .map(|i| format!("{}-{}", 1000 + i * 10, 1005 + i * 10))
            .collect();
        let refs: Vec<&str> = items.iter().map(String::as_str).collect();
        let chunks = list(&refs).multiport_chunks();
        // 8 ranges = 16 slots: 7 ranges (14 slots) fit in the first rule.
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].split(',').count(), 7);
        assert_eq!(chunks[1], "1070:1075");
    }

    #[test]
    fn duplicates_and_covered_entries_collapse_in_order() {
        let l = list(&["8080", "22", "8080", "9000-9010", "9005", "9000:9020"]);
        assert_eq!(l.multiport_chunks(), vec!["8080,22,9000:9020"]);
        assert_eq!(l.port_count(), 23);
    }

    #[test]
    fn overlaps_merge_where_their_first_member_stood_and_adjacent_entries_stay() {
        let l = list(&["443", "1005-1020", "80", "1000-1010", "1021", "1015"]);
        assert_eq!(l.multiport_chunks(), vec!["443,1000:1020,80,1021"]);
        let all = list(&["1-65535", "65535", "1"]);
        assert_eq!(all.multiport_chunks(), vec!["1:65535"]);
    }

    #[test]
    fn bad_ports_say_what_would_be_right() {
        for bad in ["0", "65536", "x", "-1", "+80", "80 ", "8\n0", "1;2", ""] {
            let e = parse_port("AppPorts", "v", bad).unwrap_err();
            assert!(
                e.message.contains("is not a port number (1-65535)"),
                "{bad:?}: {e}"
            );
        }
        let e = parse_port_range("AppPorts", "9000-8000", "9000-8000").unwrap_err();
        assert!(e.message.contains("first port is above the last"), "{e}");
    }
}
