//! CNI specification versions: which ones meshinit speaks, and what each allows.

use std::fmt;

/// The versions `VERSION` reports, oldest first. 0.3.0 is the first with chaining
/// (`prevResult`), which a chained plugin cannot do without.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version: what meshinit answers in when the caller's version is unknown.
pub const LATEST: SpecVersion = SpecVersion {
    major: 1,
    minor: 1,
    patch: 0,
};

/// A CNI specification version, `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl SpecVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        SpecVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `1.0.0`; anything else (`1.0`, `v1.0.0`, `1.0.0-rc1`) is not a version.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let mut next = || -> Option<u32> {
            let part = parts.next()?;
            let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            digits_only.then(|| part.parse().ok()).flatten()
        };
        let version = SpecVersion::new(next()?, next()?, next()?);
        parts.next().is_none().then_some(version)
    }

    pub fn is_supported(self) -> bool {
        SUPPORTED_VERSIONS
            .iter()
            .any(|v| SpecVersion::parse(v) == Some(self))
    }

    /// The result format: 0.3.x and 0.4.0 share one (with `ips[].version`), 1.x another.
    pub fn result_format(self) -> ResultFormat {
        if self.major >= 1 {
            ResultFormat::V1
        } else {
            ResultFormat::V0
        }
    }

    /// CHECK exists since 0.4.0.
    pub fn has_check(self) -> bool {
        self >= SpecVersion::new(0, 4, 0)
    }

    /// STATUS and GC exist since 1.1.0.
    pub fn has_status_and_gc(self) -> bool {
        self >= SpecVersion::new(1, 1, 0)
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The two shapes of an ADD result among the supported versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// 0.3.0, 0.3.1, 0.4.0: `ips[]` entries carry `"version": "4" | "6"`.
    V0,
    /// 1.0.0, 1.1.0: no `ips[].version`; interfaces may carry `mtu`, `socketPath`, `pciID`.
    V1,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_three_numeric_parts() {
        assert_eq!(SpecVersion::parse("1.0.0"), Some(SpecVersion::new(1, 0, 0)));
        assert_eq!(SpecVersion::parse("0.3.1"), Some(SpecVersion::new(0, 3, 1)));
        for bad in [
            "1.0",
            "1.0.0.0",
            "v1.0.0",
            "1.0.0-rc1",
            "",
            "..",
            "1..0",
            "+1.0.0",
        ] {
            assert_eq!(SpecVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn supports_the_chaining_versions_only() {
        for v in SUPPORTED_VERSIONS {
            assert!(SpecVersion::parse(v).unwrap().is_supported(), "{v}");
        }
        for v in ["0.1.0", "0.2.0", "1.2.0", "2.0.0"] {
            assert!(!SpecVersion::parse(v).unwrap().is_supported(), "{v}");
        }
        assert_eq!(LATEST.to_string(), *SUPPORTED_VERSIONS.last().unwrap());
    }

    #[test]
    fn verbs_appear_with_their_versions() {
        let v = |s| SpecVersion::parse(s).unwrap();
        assert!(!v("0.3.1").has_check());
        assert!(v("0.4.0").has_check());
        assert!(!v("1.0.0").has_status_and_gc());
        assert!(v("1.1.0").has_status_and_gc());
        assert_eq!(v("0.4.0").result_format(), ResultFormat::V0);
        assert_eq!(v("1.0.0").result_format(), ResultFormat::V1);
    }
}
