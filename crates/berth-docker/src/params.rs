//! Docker's query parameters as its clients write them: booleans as `1`, `true` or `True`
//! (Python's requests), and `filters` as JSON in either of its two shapes.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{DockerError, DockerResult};

/// Docker's reading of a boolean parameter: absent, empty, `0`, `no`, `false` and `none` are
/// false, anything else is true.
pub fn flag(value: &Option<String>) -> bool {
    match value.as_deref() {
        None => false,
        Some(text) => !matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        ),
    }
}

/// A whole number parameter, named in the error when it is not one.
pub fn number<T: std::str::FromStr>(name: &str, value: &Option<String>) -> DockerResult<Option<T>> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| DockerError::bad_parameter(format!("invalid value for {name}: '{text}' is not a number"))),
    }
}

/// `filters={"label":{"a=b":true}}` (the map form the CLI sends) or
/// `filters={"label":["a=b"]}` (the list form docker-py sends).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FilterValues {
    List(Vec<String>),
    Map(BTreeMap<String, bool>),
}

/// Parsed filters: each key with its values (a key given twice matches any of its values).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filters {
    pub values: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Parses `filters`, refusing keys the endpoint does not know (as Docker does, so a
    /// filter is never silently dropped).
    pub fn parse(text: &Option<String>, known: &[&str]) -> DockerResult<Filters> {
        let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Ok(Filters::default());
        };
        let raw: BTreeMap<String, FilterValues> = serde_json::from_str(text)
            .map_err(|e| DockerError::bad_parameter(format!("invalid filters '{text}': {e}")))?;
        let mut values = BTreeMap::new();
        for (key, value) in raw {
            if !known.contains(&key.as_str()) {
                return Err(DockerError::bad_parameter(format!(
                    "invalid filter '{key}' (berth knows {})",
                    known.join(", ")
                )));
            }
            let list = match value {
                FilterValues::List(list) => list,
                FilterValues::Map(map) => map.into_iter().filter(|(_, on)| *on).map(|(k, _)| k).collect(),
            };
            values.insert(key, list);
        }
        Ok(Filters { values })
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True when `key` is not filtered on, or when `test` holds for one of its values.
    pub fn any(&self, key: &str, test: impl Fn(&str) -> bool) -> bool {
        let values = self.get(key);
        values.is_empty() || values.iter().any(|v| test(v))
    }

    /// The `label` filter: every `KEY` or `KEY=VALUE` given must match (Docker ANDs labels).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.get("label").iter().all(|wanted| label_matches(wanted, labels))
    }
}

fn label_matches(wanted: &str, labels: &BTreeMap<String, String>) -> bool {
    match wanted.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(wanted),
    }
}

/// Docker's `name` filter is a regular expression over the name with its leading `/`; the
/// forms clients use are a plain substring and `^...$` anchors, which this handles.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let subject = format!("/{name}");
    let (anchored_start, rest) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (anchored_end, core) = match rest.strip_suffix('$') {
        Some(core) => (true, core),
        None => (false, rest),
    };
    // `^/web$` and `^web$` both mean the container called web.
    let core = core.strip_prefix('/').unwrap_or(core);
    let target = &subject[1..];
    match (anchored_start, anchored_end) {
        (true, true) => target == core,
        (true, false) => target.starts_with(core),
        (false, true) => target.ends_with(core),
        (false, false) => target.contains(core),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_docker_reads_them() {
        for yes in ["1", "true", "True", "yes"] {
            assert!(flag(&Some(yes.into())), "{yes}");
        }
        for no in ["0", "false", "False", "", "none"] {
            assert!(!flag(&Some(no.into())), "{no}");
        }
        assert!(!flag(&None));
    }

    #[test]
    fn filters_in_both_shapes() {
        let map = Filters::parse(&Some(r#"{"label":{"a=b":true,"c":true}}"#.into()), &["label"]).unwrap();
        let list = Filters::parse(&Some(r#"{"label":["a=b","c"]}"#.into()), &["label"]).unwrap();
        assert_eq!(map, list);
        let labels: BTreeMap<String, String> = [("a".into(), "b".into()), ("c".into(), "".into())].into();
        assert!(map.labels_match(&labels));
        let other: BTreeMap<String, String> = [("a".into(), "x".into()), ("c".into(), "".into())].into();
        assert!(!map.labels_match(&other));
        let error = Filters::parse(&Some(r#"{"bogus":["x"]}"#.into()), &["label"]).unwrap_err();
        assert!(error.message.contains("bogus"));
    }

    #[test]
    fn names_as_substrings_and_anchors() {
        assert!(name_matches("web", "proj_web_1"));
        assert!(name_matches("^/proj_web_1$", "proj_web_1"));
        assert!(name_matches("^proj", "proj_web_1"));
        assert!(!name_matches("^web", "proj_web_1"));
    }
}
