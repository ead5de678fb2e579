//! The top-level domains Bluesky's facet detection knows (`tlds.txt`, from
//! the ICANN section of the Public Suffix List): a link without a scheme
//! and an `@handle` mention count only when their last label is one.

use std::collections::HashSet;
use std::sync::OnceLock;

static LIST: &str = include_str!("tlds.txt");

fn set() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        LIST.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    })
}

/// `isValidDomain` of `@atproto/api`: the text after the last `.` is a
/// known TLD (compared as written: `EXAMPLE.COM` does not count, as in the
/// reference) and there is a `.` before it.
pub fn is_valid_domain(domain: &str) -> bool {
    match domain.rfind('.') {
        Some(dot) => set().contains(&domain[dot + 1..]),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_domains() {
        assert!(is_valid_domain("example.com"));
        assert!(is_valid_domain("alice.bsky.social"));
        assert!(is_valid_domain("a.b.co"));
        assert!(!is_valid_domain("com"));
        assert!(!is_valid_domain("alice.test"), "test is not a TLD");
        assert!(
            !is_valid_domain("example.COM"),
            "case-sensitive like the reference"
        );
        assert!(!is_valid_domain("example.notatld"));
        assert!(!is_valid_domain("example."));
    }
}
