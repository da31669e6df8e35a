//! Revisions: what "the agent at revision X" means, and how it is named.
//!
//! A revision is the pair (image reference, config SHA-256). Its name is
//! derived from both, so the same image with a new config is a new revision
//! that can be rolled out and rolled back on its own, and two rollouts that
//! ask for the same pair agree on the name without talking to each other.

use std::fmt;

use sha2::{Digest, Sha256};

/// Why an image reference or config hash was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevisionError {
    /// The image reference is empty or contains whitespace.
    #[error("image reference {0:?} is empty or contains whitespace")]
    MalformedImage(String),
    /// The image reference carries no `@sha256:` digest.
    #[error("image reference {0:?} has no @sha256:<64 hex> digest")]
    MissingDigest(String),
    /// The digest after `@sha256:` is not 64 lowercase hex characters.
    #[error("image reference {0:?} has a digest that is not 64 lowercase hex characters")]
    BadDigest(String),
    /// A config hash is not 64 lowercase hex characters.
    #[error("config hash {0:?} is not 64 lowercase hex characters")]
    BadConfigHash(String),
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A container image reference, with its digest when it has one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    reference: String,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference that must be pinned by digest
    /// (`registry/repo[:tag]@sha256:<64 hex>`).
    pub fn pinned(reference: &str) -> Result<Self, RevisionError> {
        let image = Self::parse(reference)?;
        if image.digest.is_none() {
            return Err(RevisionError::MissingDigest(reference.to_owned()));
        }
        Ok(image)
    }

    /// Parses any reference; a tag-only reference is accepted and has no digest.
    /// Used only when a rollout opted out of digests explicitly.
    pub fn parse(reference: &str) -> Result<Self, RevisionError> {
        if reference.is_empty() || reference.chars().any(char::is_whitespace) {
            return Err(RevisionError::MalformedImage(reference.to_owned()));
        }
        let digest = match reference.split_once('@') {
            None => None,
            Some((_, d)) => match d.strip_prefix("sha256:") {
                Some(hex) if is_sha256_hex(hex) => Some(hex.to_owned()),
                _ => return Err(RevisionError::BadDigest(reference.to_owned())),
            },
        };
        Ok(Self { reference: reference.to_owned(), digest })
    }

    /// The 64-hex digest, when the reference is pinned.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.reference
    }
}

/// The SHA-256 of an agent config, as 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigHash(String);

impl ConfigHash {
    /// Hashes config bytes exactly as stored (no normalisation: the agent
    /// hashes the bytes it reads, so both sides must agree byte for byte).
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex(&Sha256::digest(bytes)))
    }

    /// Parses a hash written in a spec or annotation.
    pub fn parse(s: &str) -> Result<Self, RevisionError> {
        if is_sha256_hex(s) { Ok(Self(s.to_owned())) } else { Err(RevisionError::BadConfigHash(s.to_owned())) }
    }

    /// The hash as 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a revision: `r-` and the first 10 hex characters of
/// SHA-256(image reference, newline, config hash, and, when the operator names one, newline
/// and the id of the pod template it writes). A change of the pod template (an operator
/// upgrade that changes what the agent pods are given) is therefore a revision of its own,
/// rolled out in waves like any other. Short enough for a label
/// value and a DaemonSet name suffix; 40 bits make an accidental collision
/// between the handful of revisions a rollout keeps negligible.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionName(String);

impl RevisionName {
    /// Derives the name of the revision (image, config, pod template id; an empty id leaves
    /// it out).
    pub fn of(image: &ImageRef, config: &ConfigHash, pod_template: &str) -> Self {
        let mut h = Sha256::new();
        h.update(image.as_str().as_bytes());
        h.update(b"\n");
        h.update(config.as_str().as_bytes());
        if !pod_template.is_empty() {
            h.update(b"\n");
            h.update(pod_template.as_bytes());
        }
        let full = hex(&h.finalize());
        Self(format!("r-{}", &full[..10]))
    }

    /// The name as a string (a valid label value).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RevisionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_image_keeps_its_digest() {
        let r = format!("ghcr.io/vigil/agent:1.10.0@sha256:{D}");
        let img = ImageRef::pinned(&r).unwrap();
        assert_eq!(img.digest(), Some(D));
        assert_eq!(img.as_str(), r);
    }

    #[test]
    fn tag_only_image_is_refused_when_a_digest_is_required() {
        assert_eq!(
            ImageRef::pinned("ghcr.io/vigil/agent:1.10.0"),
            Err(RevisionError::MissingDigest("ghcr.io/vigil/agent:1.10.0".into()))
        );
        assert!(ImageRef::parse("ghcr.io/vigil/agent:1.10.0").unwrap().digest().is_none());
    }

    #[test]
    fn short_or_uppercase_digests_are_refused() {
        for bad in [
            "a@sha256:abc".to_owned(),
            format!("a@sha256:{}", D.to_uppercase()),
            format!("a@sha512:{D}"),
            format!("a b@sha256:{D}"),
        ] {
            assert!(ImageRef::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_hash_matches_sha256sum_of_the_bytes() {
        // `printf 'abc' | sha256sum`
        assert_eq!(ConfigHash::of(b"abc").as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(ConfigHash::parse("ba7816bf").is_err());
    }

    #[test]
    fn revision_name_changes_with_either_half_and_is_a_label_value() {
        let img = ImageRef::pinned(&format!("r/a@sha256:{D}")).unwrap();
        let a = RevisionName::of(&img, &ConfigHash::of(b"v1"), "t1");
        let b = RevisionName::of(&img, &ConfigHash::of(b"v2"), "t1");
        let img2 = ImageRef::pinned(&format!("r/b@sha256:{D}")).unwrap();
        let c = RevisionName::of(&img2, &ConfigHash::of(b"v1"), "t1");
        let d = RevisionName::of(&img, &ConfigHash::of(b"v1"), "t2");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d, "a new pod template is a new revision");
        assert_eq!(a, RevisionName::of(&img, &ConfigHash::of(b"v1"), "t1"));
        // Without a template id, the name an earlier operator gave the same image and config.
        let mut h = Sha256::new();
        h.update(format!("{}\n{}", img.as_str(), ConfigHash::of(b"v1").as_str()).as_bytes());
        assert_eq!(
            RevisionName::of(&img, &ConfigHash::of(b"v1"), "").as_str(),
            format!("r-{}", &hex(&h.finalize())[..10])
        );
        assert_eq!(a.as_str().len(), 12);
        assert!(a.as_str().starts_with("r-"));
    }
}
