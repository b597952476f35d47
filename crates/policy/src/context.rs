//! The request context: condition keys and their values.

use crate::pattern::Resolve;

/// The type of a context entry, as in AWS's `ContextEntry.ContextKeyType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContextKeyType {
    String,
    StringList,
    Numeric,
    NumericList,
    Boolean,
    BooleanList,
    Ip,
    IpList,
    Binary,
    BinaryList,
    Date,
    DateList,
}

impl ContextKeyType {
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Self::StringList
                | Self::NumericList
                | Self::BooleanList
                | Self::IpList
                | Self::BinaryList
                | Self::DateList
        )
    }
}

/// One entry of AWS's `ContextEntries` list, as `SimulatePrincipalPolicy` takes it:
/// `{"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["10.0.0.1"], "ContextKeyType": "ip"}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ContextEntry {
    pub context_key_name: String,
    pub context_key_values: Vec<String>,
    pub context_key_type: ContextKeyType,
}

/// The values of one condition key in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextValue {
    /// The key as the caller spelled it (for traces).
    pub name: Box<str>,
    pub values: Vec<String>,
    /// A multivalued key (`aws:TagKeys`): set operators apply to it, and it never resolves a
    /// policy variable.
    pub multi: bool,
}

/// Condition keys with their values. Keys are case-insensitive, as in AWS.
///
/// Kept as a vector sorted by lowercased key: requests carry a handful to a few dozen keys, so a
/// binary search beats hashing and the lookup allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    entries: Vec<(Box<str>, ContextValue)>,
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Sets a single-valued key, replacing any earlier value.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.set(key, vec![value.into()], false)
    }

    /// Sets a multivalued key, replacing any earlier value.
    pub fn insert_list<I, S>(&mut self, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.set(key, values.into_iter().map(Into::into).collect(), true)
    }

    pub fn set(&mut self, key: &str, values: Vec<String>, multi: bool) -> &mut Self {
        let lower = key.to_ascii_lowercase().into_boxed_str();
        let value = ContextValue {
            name: key.into(),
            values,
            multi,
        };
        match self.entries.binary_search_by(|(k, _)| (**k).cmp(&*lower)) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (lower, value)),
        }
        self
    }

    /// Builds a context from AWS's `ContextEntries`. A `…List` type makes the key multivalued.
    pub fn from_entries(entries: &[ContextEntry]) -> Context {
        let mut ctx = Context::new();
        for e in entries {
            ctx.set(
                &e.context_key_name,
                e.context_key_values.clone(),
                e.context_key_type.is_list(),
            );
        }
        ctx
    }

    pub fn remove(&mut self, key: &str) {
        let lower = key.to_ascii_lowercase();
        if let Ok(i) = self.lookup(&lower) {
            self.entries.remove(i);
        }
    }

    fn lookup(&self, lower: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(lower))
    }

    /// Looks up a key that is already lowercased (compiled policies store their keys so).
    pub fn get_lowercase(&self, lower: &str) -> Option<&ContextValue> {
        self.lookup(lower).ok().map(|i| &self.entries[i].1)
    }

    /// Looks up a key in any case.
    pub fn get(&self, key: &str) -> Option<&ContextValue> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.get_lowercase(&key.to_ascii_lowercase())
        } else {
            self.get_lowercase(key)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ContextValue> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Resolve for Context {
    /// AWS: a variable takes the value of a single-valued key; a missing or multivalued key
    /// leaves it unresolved.
    fn resolve(&self, key: &str) -> Option<&str> {
        let v = self.get_lowercase(key)?;
        match (v.multi, v.values.as_slice()) {
            (false, [one]) => Some(one),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_replaced() {
        let mut ctx = Context::new();
        ctx.insert("aws:PrincipalTag/Team", "a");
        ctx.insert("AWS:principaltag/team", "b");
        ctx.insert_list("aws:TagKeys", ["x", "y"]);
        assert_eq!(ctx.len(), 2);
        assert_eq!(ctx.get("aws:principalTag/TEAM").unwrap().values, ["b"]);
        assert_eq!(ctx.resolve("aws:principaltag/team"), Some("b"));
        assert_eq!(ctx.resolve("aws:tagkeys"), None, "lists never resolve");
        ctx.remove("AWS:TAGKEYS");
        assert!(ctx.get("aws:TagKeys").is_none());
    }
}
