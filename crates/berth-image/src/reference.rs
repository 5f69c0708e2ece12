//! Image references as users type them (`busybox`, `127.0.0.1:5000/app:v1`,
//! `name@sha256:...`), normalized the way Docker does so one image has one name.

use oci_client::Reference;

use crate::ImageError;

/// Parses a reference, defaulting the registry to docker.io and the tag to `latest`.
pub fn parse_reference(text: &str) -> Result<Reference, ImageError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ImageError::InvalidReference {
            reference: text.to_string(),
            reason: "it is empty".into(),
        });
    }
    trimmed.parse::<Reference>().map_err(|e| ImageError::InvalidReference {
        reference: text.to_string(),
        reason: format!("{e}; use [REGISTRY/]NAME[:TAG][@DIGEST] with lowercase names, for example busybox:latest"),
    })
}

/// The stored form of a tag: `registry/repository:tag`.
pub fn normalized_tag(reference: &Reference) -> Option<String> {
    reference
        .tag()
        .map(|tag| format!("{}/{}:{}", reference.registry(), reference.repository(), tag))
}

/// The short form people read: `busybox:latest` rather than `docker.io/library/busybox:latest`.
pub fn familiar_name(normalized: &str) -> String {
    normalized
        .strip_prefix("docker.io/library/")
        .or_else(|| normalized.strip_prefix("docker.io/"))
        .unwrap_or(normalized)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(normalized_tag(&r).unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(familiar_name("docker.io/library/busybox:latest"), "busybox:latest");
        let r = parse_reference("127.0.0.1:5000/app:v1").unwrap();
        assert_eq!(normalized_tag(&r).unwrap(), "127.0.0.1:5000/app:v1");
        assert_eq!(familiar_name("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        assert!(parse_reference("Bad:Ref!").is_err());
        assert!(parse_reference("").is_err());
    }
}
