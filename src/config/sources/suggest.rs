//! "Did you mean ...?" for misspelled property names.

/// The known name closest to `unknown`, when it is close enough to be a likely typo.
pub fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let lowered = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|candidate| {
            let score = strsim::jaro_winkler(&lowered, &candidate.to_ascii_lowercase());
            (score, *candidate)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// The tail of an "unknown property" message: the suggestion or the full list.
pub fn hint(unknown: &str, known: &[&str]) -> String {
    match closest(unknown, known) {
        Some(name) => format!("unknown property; did you mean {name:?}?"),
        None => format!(
            "unknown property; known properties are {}",
            known.join(", ")
        ),
    }
}

/// Suggestions for as many unknown names as an error message lists: each one compares the
/// name with every known one, and a 16 MiB document can hold a million unknown keys. The
/// rest are only named and counted.
pub struct Suggester {
    left: usize,
}

impl Default for Suggester {
    fn default() -> Self {
        Suggester {
            left: crate::error::LISTED_PROBLEMS,
        }
    }
}

impl Suggester {
    pub fn hint(&mut self, unknown: &str, known: &[&str]) -> String {
        if self.left == 0 {
            return "unknown property".to_owned();
        }
        self.left -= 1;
        hint(unknown, known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_known_name() {
        let known = ["IgnoredUID", "IgnoredGID", "AppPorts", "ProxyEgressPort"];
        assert_eq!(closest("AppPort", &known), Some("AppPorts"));
        assert_eq!(closest("ignoreduid", &known), Some("IgnoredUID"));
        assert_eq!(closest("Colour", &known), None);
    }
}
