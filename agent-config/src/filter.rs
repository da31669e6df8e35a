//! Include/exclude filters over names (mount points, filesystem types, devices, interfaces).

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Glob patterns as written in the config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Only names matching one of these (empty: every name).
    #[serde(default)]
    pub include: Vec<String>,
    /// Never names matching one of these; wins over include.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A compiled filter: a name passes when it matches an include pattern (or there are none)
/// and no exclude pattern.
#[derive(Clone, Debug, Default)]
pub struct NameFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl NameFilter {
    /// Compiles the patterns; the error names the pattern that does not compile.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        let build = |pats: &[String]| -> Result<Option<GlobSet>, globset::Error> {
            if pats.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for p in pats {
                b.add(Glob::new(p)?);
            }
            b.build().map(Some)
        };
        Ok(Self { include: build(include)?, exclude: build(exclude)? })
    }

    /// Compiles a config entry.
    pub fn from_spec(spec: &FilterSpec) -> Result<Self, globset::Error> {
        Self::new(&spec.include, &spec.exclude)
    }

    /// Whether `name` passes.
    pub fn allows(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(name))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(name))
    }

    /// Whether an include pattern names `name` (not merely "no include list").
    pub fn explicitly_includes(&self, name: &str) -> bool {
        self.include.as_ref().is_some_and(|s| s.is_match(name)) && self.allows(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_wins_over_include_and_empty_include_allows_all() {
        let f = NameFilter::new(&["eth*".into(), "ens*".into()], &["eth9".into()]).unwrap();
        assert!(f.allows("eth0") && f.allows("ens3"));
        assert!(!f.allows("eth9") && !f.allows("lo"));
        let all = NameFilter::new(&[], &["veth*".into()]).unwrap();
        assert!(all.allows("lo") && !all.allows("veth12ab"));
        assert!(!all.explicitly_includes("lo"));
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_it() {
        let e = NameFilter::new(&["[eth".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("[eth"), "{e}");
    }
}
