//! The request context: condition keys and their values.

use std::borrow::Cow;

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

/// The values of one condition key in a request. Keys and values borrow what outlives the
/// context (the key names the server writes, the request's own parameters and the state's
/// strings) and own the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextValue<'a> {
    /// The key as the caller spelled it (for traces).
    pub name: Cow<'a, str>,
    /// Inline for the usual one value: a single-valued key costs no separate list allocation.
    pub values: Values<'a>,
    /// A multivalued key (`aws:TagKeys`): set operators apply to it, and it never resolves a
    /// policy variable.
    pub multi: bool,
}

/// A key's values: the usual one inline, several in a list. A slice to read (`Deref`).
///
/// An enum rather than a `SmallVec`: the context borrows, and `SmallVec`'s array parameter would
/// make it invariant in that lifetime (callers could then not lend it values that end sooner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Values<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl<'a> std::ops::Deref for Values<'a> {
    type Target = [Cow<'a, str>];

    fn deref(&self) -> &[Cow<'a, str>] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }
}

impl<'a> FromIterator<Cow<'a, str>> for Values<'a> {
    fn from_iter<I: IntoIterator<Item = Cow<'a, str>>>(iter: I) -> Values<'a> {
        Values::Many(iter.into_iter().collect())
    }
}

impl Values<'_> {
    /// The values as owned strings (for traces and answers).
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|v| v.to_string()).collect()
    }
}

/// Condition keys with their values. Keys are case-insensitive, as in AWS.
///
/// Kept as a vector sorted by lowercased key: requests carry a handful to a few dozen keys, so a
/// binary search beats hashing and the lookup allocates nothing. The order compares the keys'
/// ASCII-lowercased bytes as it goes, so an entry holds its key once, as the caller spelled it
/// (one allocation fewer per key than keeping a lowercased copy beside it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context<'a> {
    entries: Vec<ContextValue<'a>>,
}

/// `a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())`, without the copies.
fn cmp_ignore_ascii_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

impl<'a> Context<'a> {
    pub fn new() -> Context<'a> {
        Context::default()
    }

    /// An empty context with room for `keys` keys (one allocation where growing would take
    /// several).
    pub fn with_capacity(keys: usize) -> Context<'a> {
        Context {
            entries: Vec::with_capacity(keys),
        }
    }

    /// Sets a single-valued key, replacing any earlier value. A `&str` key or value is
    /// borrowed for the context's life, a `String` kept.
    pub fn insert(
        &mut self,
        key: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, str>>,
    ) -> &mut Self {
        self.put(key.into(), Values::One(value.into()), false)
    }

    /// Sets a multivalued key, replacing any earlier value.
    pub fn insert_list<I, S>(&mut self, key: impl Into<Cow<'a, str>>, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'a, str>>,
    {
        self.put(
            key.into(),
            values.into_iter().map(Into::into).collect(),
            true,
        )
    }

    pub fn set(
        &mut self,
        key: impl Into<Cow<'a, str>>,
        values: Vec<String>,
        multi: bool,
    ) -> &mut Self {
        self.put(
            key.into(),
            values.into_iter().map(Cow::Owned).collect(),
            multi,
        )
    }

    fn put(&mut self, key: Cow<'a, str>, values: Values<'a>, multi: bool) -> &mut Self {
        let found = self.lookup(&key);
        let value = ContextValue {
            name: key,
            values,
            multi,
        };
        match found {
            Ok(i) => self.entries[i] = value,
            Err(i) => self.entries.insert(i, value),
        }
        self
    }

    /// Builds a context from AWS's `ContextEntries`. A `…List` type makes the key multivalued.
    pub fn from_entries(entries: &'a [ContextEntry]) -> Context<'a> {
        let mut ctx = Context::new();
        for e in entries {
            ctx.put(
                Cow::Borrowed(e.context_key_name.as_str()),
                e.context_key_values
                    .iter()
                    .map(|v| Cow::Borrowed(v.as_str()))
                    .collect(),
                e.context_key_type.is_list(),
            );
        }
        ctx
    }

    /// The same context, owning every key and value (to outlive what it borrowed).
    pub fn into_owned(self) -> Context<'static> {
        let own = |c: Cow<'a, str>| Cow::Owned(c.into_owned());
        Context {
            entries: self
                .entries
                .into_iter()
                .map(|e| ContextValue {
                    name: own(e.name),
                    values: match e.values {
                        Values::One(v) => Values::One(own(v)),
                        Values::Many(v) => Values::Many(v.into_iter().map(own).collect()),
                    },
                    multi: e.multi,
                })
                .collect(),
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Ok(i) = self.lookup(key) {
            self.entries.remove(i);
        }
    }

    /// The entry of `key` in any case, or where it would go.
    fn lookup(&self, key: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| cmp_ignore_ascii_case(&e.name, key))
    }

    /// Looks up a key that is already lowercased (compiled policies store their keys so). The
    /// search compares without case either way, so this is [`Context::get`], kept for its callers.
    pub fn get_lowercase(&self, lower: &str) -> Option<&ContextValue<'a>> {
        self.get(lower)
    }

    /// Looks up a key in any case.
    pub fn get(&self, key: &str) -> Option<&ContextValue<'a>> {
        self.lookup(key).ok().map(|i| &self.entries[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &ContextValue<'a>> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Resolve for Context<'_> {
    /// AWS: a variable takes the value of a single-valued key; a missing or multivalued key
    /// leaves it unresolved.
    fn resolve(&self, key: &str) -> Option<&str> {
        let v = self.get_lowercase(key)?;
        match (v.multi, &*v.values) {
            (false, [one]) => Some(&**one),
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
        assert_eq!(
            ctx.get("aws:principalTag/TEAM")
                .unwrap()
                .values
                .to_strings(),
            ["b"]
        );
        assert_eq!(ctx.resolve("aws:principaltag/team"), Some("b"));
        assert_eq!(ctx.resolve("aws:tagkeys"), None, "lists never resolve");
        ctx.remove("AWS:TAGKEYS");
        assert!(ctx.get("aws:TagKeys").is_none());
    }

    #[test]
    fn keys_are_found_in_any_case_among_many() {
        let keys = [
            "aws:SourceIp",
            "aws:PrincipalTag/Team",
            "oidc.example.com/id/X:sub",
            "sts:RoleSessionName",
            "aws:RequestTag/a",
            "aws:RequestTag/B",
            "aws:EpochTime",
            "Zeta:key",
            "aws:principaltag/team-lead",
        ];
        let mut ctx = Context::new();
        for (i, k) in keys.iter().enumerate() {
            ctx.insert(*k, i.to_string());
        }
        assert_eq!(ctx.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            let want = i.to_string();
            for spelled in [
                k.to_string(),
                k.to_ascii_lowercase(),
                k.to_ascii_uppercase(),
            ] {
                let got = ctx.get(&spelled).map(|v| v.values.to_strings());
                assert_eq!(got, Some(vec![want.clone()]), "{spelled}");
            }
            assert_eq!(
                ctx.get_lowercase(&k.to_ascii_lowercase()).map(|v| &*v.name),
                Some(*k)
            );
        }
        assert!(ctx.get("aws:PrincipalTag/Tea").is_none());
        assert!(ctx.get("aws:PrincipalTag/Teams").is_none());
    }
}
