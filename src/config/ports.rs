//! Port lists: single ports and ranges, with duplicates collapsed. How many fit in one
//! iptables `multiport` match is the planner's concern (`ruleset::plan`), by the slots
//! each entry takes.

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

    fn written(list: &PortList) -> String {
        let items: Vec<String> = list.ranges().iter().map(ToString::to_string).collect();
        items.join(",")
    }

    #[test]
    fn duplicates_and_covered_entries_collapse_in_order() {
        let l = list(&["8080", "22", "8080", "9000-9010", "9005", "9000:9020"]);
        assert_eq!(written(&l), "8080,22,9000:9020");
    }

    #[test]
    fn overlaps_merge_where_their_first_member_stood_and_adjacent_entries_stay() {
        let l = list(&["443", "1005-1020", "80", "1000-1010", "1021", "1015"]);
        assert_eq!(written(&l), "443,1000:1020,80,1021");
        let all = list(&["1-65535", "65535", "1"]);
        assert_eq!(written(&all), "1:65535");
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
