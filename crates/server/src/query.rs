//! awsQuery request parameters: `Action=…&Version=…&Tags.member.1.Key=…`.

use std::collections::BTreeMap;

use crate::error::AwsError;

#[derive(Clone, Debug, Default)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Parses a form body or a query string. A repeated name keeps its first value.
    pub fn parse(input: &[u8]) -> Params {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(input) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Params { map }
    }

    pub fn extend(&mut self, other: Params) {
        for (k, v) in other.map {
            self.map.entry(k).or_insert(v);
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, AwsError> {
        self.get(name).ok_or_else(|| AwsError::missing(name))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, AwsError> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    AwsError::validation(format!(
                        "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be a number",
                        crate::error::lower_first(name)
                    ))
                })
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        self.get(name)
            .map(|v| match v {
                "true" | "True" => Ok(true),
                "false" | "False" => Ok(false),
                _ => Err(AwsError::validation(format!(
                    "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be true or false",
                    crate::error::lower_first(name)
                ))),
            })
            .transpose()
    }

    /// `Name.member.1`, `Name.member.2`, … in index order.
    pub fn list(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}.member.");
        let mut items: Vec<(u32, &str)> = self
            .map
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| Some((k[prefix.len()..].parse().ok()?, v.as_str())))
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `Name.member.N.Field` structures, in index order, as field maps.
    pub fn structs(&self, name: &str) -> Vec<BTreeMap<&str, &str>> {
        let prefix = format!("{name}.member.");
        let mut items: BTreeMap<u32, BTreeMap<&str, &str>> = BTreeMap::new();
        for (k, v) in self
            .map
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            let rest = &k[prefix.len()..];
            if let Some((index, field)) = rest.split_once('.')
                && let Ok(index) = index.parse::<u32>()
            {
                items.entry(index).or_default().insert(field, v.as_str());
            }
        }
        items.into_values().collect()
    }

    /// `Tags.member.N.Key` / `.Value` pairs.
    pub fn tags(&self, name: &str) -> Result<Vec<(String, String)>, AwsError> {
        self.structs(name)
            .into_iter()
            .map(|m| {
                let key = m.get("Key").ok_or_else(|| AwsError::missing("Key"))?;
                Ok((
                    key.to_string(),
                    m.get("Value").copied().unwrap_or("").to_string(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_structs_in_index_order() {
        let p = Params::parse(
            b"Action=X&ClientIDList.member.10=j&ClientIDList.member.2=b&ClientIDList.member.1=a\
              &Tags.member.2.Key=k2&Tags.member.1.Value=v1&Tags.member.1.Key=k1&Tags.member.2.Value=v%202",
        );
        assert_eq!(p.list("ClientIDList"), ["a", "b", "j"]);
        assert_eq!(
            p.tags("Tags").unwrap(),
            [
                ("k1".to_string(), "v1".to_string()),
                ("k2".to_string(), "v 2".to_string())
            ]
        );
        assert_eq!(p.required("Action").unwrap(), "X");
        let e = p.required("RoleName").unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("at 'roleName'"));
        assert!(Params::parse(b"MaxItems=x").int("MaxItems").is_err());
    }
}
