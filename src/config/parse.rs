//! TOML text to a typed value, naming every bad key rather than the first.
//!
//! The text is parsed into a `toml::Value` (a syntax error stops there, with its line and
//! column). Then the value is deserialized with `serde_path_to_error`; each error is recorded
//! with its full path, the offending key is removed (so its default applies) and the
//! deserialization is tried again, a bounded number of times. Every config struct takes
//! defaults for every key, so removing a key always makes progress.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Value;

use super::ConfigIssue;

/// More errors than this in one file are not worth listing one by one.
const MAX_ERRORS: usize = 100;

/// A file that is not TOML at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One step of a key path, in the coordinates of the value being deserialized.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// What parsing found.
#[derive(Debug)]
pub struct Parsed<T> {
    /// `None` when some error could not be stepped over (then `issues` says why).
    pub value: Option<T>,
    /// Every type error and unknown key, with its path in the file.
    pub issues: Vec<ConfigIssue>,
    /// Array elements dropped because they did not parse, by the array's path in the file.
    removed: HashMap<String, Vec<usize>>,
}

impl<T> Parsed<T> {
    /// A path into `value` (`phone.allowed_countries[0]`) as a path into the file, where
    /// elements before it may have been dropped (`phone.allowed_countries[1]`).
    pub fn path_in_file(&self, path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        let mut rest = path;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find(']').and_then(|close| {
                after[..close]
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, &after[close + 1..]))
            }) {
                Some((i, tail)) => {
                    let i = original_index(self.removed.get(&out), i);
                    out.push_str(&format!("[{i}]"));
                    rest = tail;
                }
                None => {
                    out.push('[');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The index in the file of element `i` of an array from which `removed` (indices in the
/// file, ascending) were dropped.
fn original_index(removed: Option<&Vec<usize>>, i: usize) -> usize {
    let mut original = i;
    for r in removed.into_iter().flatten() {
        if *r <= original {
            original += 1;
        }
    }
    original
}

/// Parses `text` and deserializes it into `T`, collecting every type error and unknown key.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<Parsed<T>, Syntax> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((1, 1));
        Syntax {
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    let mut value = Value::Table(table);
    let mut issues = Vec::new();
    // Array elements removed so far, by the array's original path: later errors in the same
    // array are reported with their index in the file, not in the shrunken array.
    let mut removed: HashMap<String, Vec<usize>> = HashMap::new();
    while issues.len() < MAX_ERRORS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => {
                return Ok(Parsed {
                    value: Some(t),
                    issues,
                    removed,
                });
            }
            Err(e) => e,
        };
        let steps: Vec<Step> = err
            .path()
            .iter()
            .map_while(|s| match s {
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Enum { variant } => Some(Step::Key(variant.clone())),
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Unknown => None,
            })
            .collect();
        let mut steps = steps;
        let mut message = tidy(err.into_inner().message());
        // A map keyed by an enum (`[otp.purposes.bogus]`): serde names the map, we name the key.
        if let Some(rest) = message.strip_prefix("unknown variant `")
            && let Some((variant, expected)) = rest.split_once("`, expected ")
            && let Some(Value::Table(t)) = lookup(&value, &steps)
            && t.contains_key(variant)
        {
            steps.push(Step::Key(variant.to_owned()));
            message = format!("unknown key (expected {expected})");
        }
        let (path, index_in_file) = original_path(&steps, &removed);
        if is_secret_path(&path) {
            message = redacted(&message);
        }
        issues.push(ConfigIssue {
            path: if path.is_empty() {
                "(top level)".into()
            } else {
                path.clone()
            },
            message,
        });
        match remove(&mut value, &steps) {
            Some(Removed::Key) => {}
            Some(Removed::Element) => {
                let array = path[..path.rfind('[').unwrap_or(0)].to_owned();
                let list = removed.entry(array).or_default();
                list.push(index_in_file);
                list.sort_unstable();
            }
            None => break,
        }
    }
    Ok(Parsed {
        value: None,
        issues,
        removed,
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The dotted path as written in the file (`smpp.smsc[1].window`), and the last index in
/// file coordinates when the path ends at an array element.
fn original_path(steps: &[Step], removed: &HashMap<String, Vec<usize>>) -> (String, usize) {
    let mut path = String::new();
    let mut last_index = 0;
    for step in steps {
        match step {
            Step::Key(k) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Step::Index(i) => {
                let original = original_index(removed.get(&path), *i);
                last_index = original;
                path.push_str(&format!("[{original}]"));
            }
        }
    }
    (path, last_index)
}

/// The value `steps` points at.
fn lookup<'v>(value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    let mut at = value;
    for step in steps {
        at = match (step, at) {
            (Step::Key(k), Value::Table(t)) => t.get(k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(at)
}

enum Removed {
    Key,
    Element,
}

/// Removes what `steps` points at; `None` when it points at nothing removable.
fn remove(value: &mut Value, steps: &[Step]) -> Option<Removed> {
    let (last, parents) = steps.split_last()?;
    let mut at = value;
    for step in parents {
        at = match (step, at) {
            (Step::Key(k), Value::Table(t)) => t.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    match (last, at) {
        (Step::Key(k), Value::Table(t)) => t.remove(k).map(|_| Removed::Key),
        (Step::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            Some(Removed::Element)
        }
        _ => None,
    }
}

/// serde's wording, made to read as a config message.
fn tidy(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("unknown key (expected {expected})");
    }
    if message.starts_with("unknown field ") {
        return "unknown key".into();
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        n: u32,
        list: Vec<u32>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        a: Inner,
        items: Vec<Inner>,
        name: String,
    }

    fn paths(text: &str) -> Vec<String> {
        let parsed = parse::<Outer>(text).expect("TOML");
        parsed.issues.into_iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn paths_into_the_parsed_value_are_mapped_back_to_the_file() {
        let parsed = parse::<Outer>("[a]\nlist = [\"x\", 1, \"y\", 2, 3]\n").expect("TOML");
        assert_eq!(parsed.issues.len(), 2);
        assert_eq!(parsed.value.as_ref().expect("parsed").a.list, [1, 2, 3]);
        assert_eq!(parsed.path_in_file("a.list[0]"), "a.list[1]");
        assert_eq!(parsed.path_in_file("a.list[1]"), "a.list[3]");
        assert_eq!(parsed.path_in_file("a.list[2].n"), "a.list[4].n");
        assert_eq!(parsed.path_in_file("items[0]"), "items[0]");
    }

    #[test]
    fn every_bad_key_is_named_by_its_own_path() {
        let p = paths(
            "name = 1\nbogus = true\n[a]\nn = \"x\"\nlist = [1, \"a\", 2, \"b\"]\n[[items]]\nn = 1\n[[items]]\nn = -1\nzap = 0\n",
        );
        let joined = p.join("\n");
        for want in [
            "name: invalid type",
            "bogus: unknown key",
            "a.n: invalid type",
            "a.list[1]: invalid type",
            "a.list[3]: invalid type",
            "items[1].n: invalid value",
            "items[1].zap: unknown key",
        ] {
            assert!(
                p.iter().any(|l| l.starts_with(want)),
                "{want} missing in:\n{joined}"
            );
        }
        assert_eq!(p.len(), 7, "{joined}");
    }

    #[test]
    fn syntax_errors_have_a_line_and_column() {
        let e = parse::<Outer>("name = \"a\"\n[a]\nn = = 2\n").unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(e.column >= 4, "{e:?}");
    }
}

/// Keys whose values are secrets: their errors never repeat the value (check-config's output
/// reaches the journal through `ExecStartPre`).
fn is_secret_path(path: &str) -> bool {
    path.starts_with("security.")
        || path.contains("password")
        || path.contains("secret")
        || path.starts_with("store.redis_url")
        || path.starts_with("store.redis_cluster")
}

/// A serde message without the value it quotes: `invalid type: string "…", expected a
/// sequence` becomes `invalid type (value not shown), expected a sequence`.
fn redacted(message: &str) -> String {
    let kind = message.split(':').next().unwrap_or("invalid value");
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("{kind} (value not shown), expected {expected}"),
        None => format!("{kind} (value not shown)"),
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secret_values_are_not_repeated() {
        let key = "ab".repeat(32);
        let m = format!("invalid type: string \"{key}\", expected a sequence");
        assert!(is_secret_path("security.retired_secret_keys"));
        assert!(is_secret_path("smpp.smsc[0].password"));
        assert!(is_secret_path("subscriber.camara.client_secret"));
        assert!(!is_secret_path("otp.ttl"));
        let r = redacted(&m);
        assert!(!r.contains(&key), "{r}");
        assert_eq!(r, "invalid type (value not shown), expected a sequence");
    }
}
