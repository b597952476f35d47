//! Where an [`Identity`] comes from: ServiceAccount annotations, the `pod-identity-webhook`
//! ConfigMap and the container-credentials identities file, combined the way upstream's
//! `pkg/cache` does. Pure: the sources are plain data handed in by `crate::source`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::mutate::{
    Config, Credentials, Identity, annotation, clamp_token_expiration, parse_go_bool, parse_go_int,
};

/// `--compose-role-arn`: a role-arn annotation without `arn:` is a role name in this account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeRoleArn {
    /// The partition, from the region prefix (see [`partition_for_region`]).
    pub partition: String,
    /// The 12-digit account id.
    pub account_id: String,
}

/// upstream: the partition from the region prefix.
pub fn partition_for_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eusc-") {
        "aws-eusc"
    } else {
        "aws"
    }
}

/// What we keep of a ServiceAccount: only our annotations, parsed (upstream `addSA`). A
/// ServiceAccount without a role is still kept, so that removing the annotation stops mutation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAccountEntry {
    /// `<prefix>/role-arn`, composed when `--compose-role-arn` is on. Empty: no role.
    pub role_arn: String,
    /// `<prefix>/audience`.
    pub audience: Option<String>,
    /// `<prefix>/sts-regional-endpoints`, when it parses as a Go bool.
    pub regional_sts: Option<bool>,
    /// `<prefix>/token-expiration`, when it parses as an integer; raised to 600.
    pub token_expiration: Option<i64>,
    /// `<prefix>/sts-endpoint` (podiam): `AWS_ENDPOINT_URL_STS` for the IRSA pods.
    pub sts_endpoint: Option<String>,
}

impl ServiceAccountEntry {
    /// Parse the annotations of one ServiceAccount.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        cfg: &Config,
        compose: Option<&ComposeRoleArn>,
    ) -> Self {
        let get = |suffix: &str| annotations.get(&cfg.annotation_key(suffix));
        let mut role_arn = get(annotation::ROLE_ARN).cloned().unwrap_or_default();
        if let Some(c) = compose
            && !role_arn.is_empty()
            && !role_arn.contains("arn:")
        {
            role_arn = format!(
                "arn:{}:iam::{}:role/{}",
                c.partition, c.account_id, role_arn
            );
        }
        if !role_arn.is_empty() && !is_valid_role_arn(&role_arn) {
            // upstream only warns.
            tracing::warn!(role_arn, "role-arn annotation is not a valid IAM role ARN");
        }
        Self {
            role_arn,
            audience: get(annotation::AUDIENCE).cloned(),
            regional_sts: get(annotation::STS_REGIONAL_ENDPOINTS).and_then(|v| parse_go_bool(v)),
            token_expiration: get(annotation::TOKEN_EXPIRATION)
                .and_then(|v| parse_go_int(v))
                .map(clamp_token_expiration),
            sts_endpoint: get(annotation::STS_ENDPOINT).cloned(),
        }
    }

    /// The annotation keys this entry is built from (everything else is dropped on receipt).
    pub fn keys(cfg: &Config) -> [String; 5] {
        [
            annotation::ROLE_ARN,
            annotation::AUDIENCE,
            annotation::STS_REGIONAL_ENDPOINTS,
            annotation::TOKEN_EXPIRATION,
            annotation::STS_ENDPOINT,
        ]
        .map(|s| cfg.annotation_key(s))
    }
}

/// upstream's check `^arn:aws[a-z0-9-]*:iam::\d{12}:role\/[\w-\/.@+=,]+$`, without a regex engine.
pub fn is_valid_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let Some((partition_tail, rest)) = rest.split_once(':') else {
        return false;
    };
    if !partition_tail
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return false;
    }
    let Some(rest) = rest.strip_prefix("iam::") else {
        return false;
    };
    let Some((account, rest)) = rest.split_once(':') else {
        return false;
    };
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(name) = rest.strip_prefix("role/") else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || "-/.@+=,".contains(c))
}

/// One entry of the ConfigMap's `data.config` JSON (`--watch-config-map`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMapEntry {
    /// `RoleARN`.
    pub role_arn: String,
    /// `Audience`, not defaulted: empty means the API server's default audience.
    pub audience: String,
    /// `UseRegionalSTS` (false when absent, not the flag).
    pub use_regional_sts: bool,
    /// `TokenExpiration`; 0 means the flag.
    pub token_expiration: i64,
}

/// The ConfigMap mapping, keyed `ns/sa` or `*/sa`.
pub type ConfigMapMapping = HashMap<String, ConfigMapEntry>;

/// The ConfigMap upstream watches in `--namespace`.
pub const CONFIG_MAP_NAME: &str = "pod-identity-webhook";

/// Errors reading the ConfigMap or the identities file.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The JSON did not parse or had the wrong shape.
    #[error("while parsing `{what}`: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A key was not `namespace/name`.
    #[error("key `{0}` is not `namespace/serviceaccount`")]
    BadKey(String),
}

/// Parse `data.config` of the `pod-identity-webhook` ConfigMap. Field names match
/// case-insensitively, as Go's `encoding/json` does.
pub fn parse_config_map(config: &str) -> Result<ConfigMapMapping, MappingError> {
    let raw: HashMap<String, HashMap<String, Value>> =
        serde_json::from_str(config).map_err(|source| MappingError::Json {
            what: "data.config",
            source,
        })?;
    let mut out = ConfigMapMapping::new();
    for (key, fields) in raw {
        // upstream splits on `/` and uses parts[0], parts[1]; reject what would make it panic.
        if key.split('/').count() < 2 {
            return Err(MappingError::BadKey(key));
        }
        let mut entry = ConfigMapEntry::default();
        for (name, value) in fields {
            match name.to_ascii_lowercase().as_str() {
                "rolearn" => entry.role_arn = value.as_str().unwrap_or_default().to_owned(),
                "audience" => entry.audience = value.as_str().unwrap_or_default().to_owned(),
                "useregionalsts" => entry.use_regional_sts = value.as_bool().unwrap_or_default(),
                "tokenexpiration" => entry.token_expiration = value.as_i64().unwrap_or_default(),
                _ => {}
            }
        }
        let mut parts = key.split('/');
        let (ns, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        out.insert(format!("{ns}/{name}"), entry);
    }
    Ok(out)
}

/// The container-credentials (EKS Pod Identity) associations: `(namespace, serviceAccount)`.
pub type Associations = HashSet<(String, String)>;

/// Parse upstream's identities file `{"identities":[{"namespace","serviceAccount"}]}`. An empty
/// file clears the mapping.
pub fn parse_identities_file(contents: &str) -> Result<Associations, MappingError> {
    if contents.trim().is_empty() {
        return Ok(Associations::new());
    }
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        identities: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        namespace: String,
        service_account: String,
    }
    let file: File = serde_json::from_str(contents).map_err(|source| MappingError::Json {
        what: "identities file",
        source,
    })?;
    Ok(file
        .identities
        .into_iter()
        .map(|e| (e.namespace, e.service_account))
        .collect())
}

/// Everything the resolver looks at for one pod.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    /// The pod's ServiceAccount as cached, `None` when it is not known at all.
    pub service_account: Option<&'a ServiceAccountEntry>,
    /// The ConfigMap mapping (empty without `--watch-config-map`).
    pub config_map: &'a ConfigMapMapping,
    /// The Pod Identity associations.
    pub associations: &'a Associations,
}

/// Which identity, if any, the pod in `namespace` running as `service_account` gets.
///
/// upstream order: a Pod Identity association beats a role ARN (fixture `cc/rawPodWithRoleArn`);
/// then the SA's role-arn annotation; then the ConfigMap's `ns/sa`, then `*/sa`. In Pod Identity
/// mode, regional STS and token expiration still come from the SA or the ConfigMap's `ns/sa`
/// (upstream `GetCommonConfigurations`), and otherwise are `false` and 86400 whatever the flags.
pub fn resolve(
    namespace: &str,
    service_account: &str,
    src: Sources<'_>,
    cfg: &Config,
) -> Option<Identity> {
    let cm_exact = src
        .config_map
        .get(&format!("{namespace}/{service_account}"));
    let cm_wildcard = || src.config_map.get(&format!("*/{service_account}"));
    let cm_expiration = |e: &ConfigMapEntry| {
        Some(if e.token_expiration == 0 {
            cfg.token_expiration
        } else {
            e.token_expiration
        })
    };
    if src
        .associations
        .contains(&(namespace.to_owned(), service_account.to_owned()))
    {
        let (regional_sts, token_expiration) = match (src.service_account, cm_exact) {
            (Some(sa), _) => (sa.regional_sts, sa.token_expiration),
            (None, Some(cm)) => (Some(cm.use_regional_sts), cm_expiration(cm)),
            (None, None) => (Some(false), Some(crate::mutate::DEFAULT_TOKEN_EXPIRATION)),
        };
        return Some(Identity {
            regional_sts,
            token_expiration,
            ..Identity::container_credentials()
        });
    }
    if let Some(sa) = src.service_account.filter(|sa| !sa.role_arn.is_empty()) {
        return Some(Identity {
            credentials: Credentials::WebIdentity {
                role_arn: sa.role_arn.clone(),
            },
            audience: sa.audience.clone(),
            regional_sts: sa.regional_sts,
            token_expiration: sa.token_expiration,
            expiration_jitter: 0,
            sts_endpoint: sa.sts_endpoint.clone(),
        });
    }
    let cm = cm_exact
        .or_else(cm_wildcard)
        .filter(|cm| !cm.role_arn.is_empty())?;
    Some(Identity {
        credentials: Credentials::WebIdentity {
            role_arn: cm.role_arn.clone(),
        },
        audience: Some(cm.audience.clone()),
        regional_sts: Some(cm.use_regional_sts),
        token_expiration: cm_expiration(cm),
        expiration_jitter: 0,
        sts_endpoint: src.service_account.and_then(|sa| sa.sts_endpoint.clone()),
    })
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
