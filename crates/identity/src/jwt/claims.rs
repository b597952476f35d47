//! The claims of a verified token: the whole JSON object, plus typed views of the parts podiam
//! reads (registered claims, Kubernetes' `kubernetes.io`, AWS's session-tag claim).

use serde::Deserialize;
use serde_json::{Map, Value};

/// Kubernetes' private claim in projected ServiceAccount tokens.
pub const KUBERNETES_CLAIM: &str = "kubernetes.io";
/// AWS's claim carrying session tags for `AssumeRoleWithWebIdentity` (IAM User Guide,
/// "Passing session tags using AssumeRoleWithWebIdentity").
pub const AWS_TAGS_CLAIM: &str = "https://aws.amazon.com/tags";
/// AWS's claim carrying the source identity for `AssumeRoleWithWebIdentity`.
pub const AWS_SOURCE_IDENTITY_CLAIM: &str = "https://aws.amazon.com/source_identity";

/// A claim present but not of the expected shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("claim `{claim}` {problem}")]
pub struct ClaimError {
    /// The claim's name.
    pub claim: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ClaimError {
    fn new(claim: &str, problem: impl Into<String>) -> Self {
        Self {
            claim: claim.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The payload of a JWT with the registered claims already read and type-checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
    iss: Option<String>,
    sub: Option<String>,
    aud: Vec<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl Claims {
    /// Reads the registered claims of a JSON object.
    ///
    /// AWS: "Timestamps in the token must be formatted as either an integer or a long integer",
    /// so `exp`, `nbf` and `iat` must be JSON integers. `aud` may be a string or an array of
    /// strings (RFC 7519 §4.1.3).
    ///
    /// # Errors
    /// [`ClaimError`] for a registered claim of the wrong type.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, ClaimError> {
        let string = |name: &str| -> Result<Option<String>, ClaimError> {
            match map.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ClaimError::new(name, "is not a string")),
            }
        };
        let time = |name: &str| -> Result<Option<i64>, ClaimError> {
            match map.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| ClaimError::new(name, "is not an integer NumericDate")),
                Some(_) => Err(ClaimError::new(name, "is not an integer NumericDate")),
            }
        };
        let aud = match map.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ClaimError::new("aud", "is not a string or array of strings"))?,
            Some(_) => {
                return Err(ClaimError::new(
                    "aud",
                    "is not a string or array of strings",
                ));
            }
        };
        Ok(Self {
            iss: string("iss")?,
            sub: string("sub")?,
            exp: time("exp")?,
            nbf: time("nbf")?,
            iat: time("iat")?,
            aud,
            map,
        })
    }

    /// `iss`.
    #[must_use]
    pub fn issuer(&self) -> Option<&str> {
        self.iss.as_deref()
    }

    /// `sub`.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// `aud`, always as a list (a single string becomes one element).
    #[must_use]
    pub fn audiences(&self) -> &[String] {
        &self.aud
    }

    /// `exp`, seconds since the epoch.
    #[must_use]
    pub fn expires_at(&self) -> Option<i64> {
        self.exp
    }

    /// `nbf`, seconds since the epoch.
    #[must_use]
    pub fn not_before(&self) -> Option<i64> {
        self.nbf
    }

    /// `iat`, seconds since the epoch.
    #[must_use]
    pub fn issued_at(&self) -> Option<i64> {
        self.iat
    }

    /// `jti`, when it is a string.
    #[must_use]
    pub fn jwt_id(&self) -> Option<&str> {
        self.map.get("jti").and_then(Value::as_str)
    }

    /// Any claim by name, for trust-policy condition keys such as `<issuer>:amr`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// The whole payload object.
    #[must_use]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The `kubernetes.io` claim of a projected ServiceAccount token, if present.
    ///
    /// # Errors
    /// [`ClaimError`] when the claim is present but not shaped as kube-apiserver writes it.
    pub fn kubernetes(&self) -> Result<Option<KubernetesClaims>, ClaimError> {
        self.typed(KUBERNETES_CLAIM)
    }

    /// AWS's session-tag claim (`https://aws.amazon.com/tags`), if present.
    ///
    /// AWS: `{"principal_tags": {"Key": ["value"]}, "transitive_tag_keys": ["Key"]}`; each tag
    /// carries exactly one value (session tags are single-valued), a bare string is accepted too.
    ///
    /// # Errors
    /// [`ClaimError`] when the claim is present but malformed or a tag has several values.
    pub fn session_tags(&self) -> Result<Option<SessionTagsClaim>, ClaimError> {
        let Some(raw) = self.typed::<RawTagsClaim>(AWS_TAGS_CLAIM)? else {
            return Ok(None);
        };
        let mut principal_tags = Vec::with_capacity(raw.principal_tags.len());
        for (key, value) in raw.principal_tags {
            let value = match value {
                Value::String(s) => s,
                Value::Array(mut items) if items.len() == 1 => match items.pop() {
                    Some(Value::String(s)) => s,
                    _ => {
                        return Err(ClaimError::new(
                            AWS_TAGS_CLAIM,
                            format!("tag `{key}` has a value that is not a string"),
                        ));
                    }
                },
                _ => {
                    return Err(ClaimError::new(
                        AWS_TAGS_CLAIM,
                        format!("tag `{key}` must have exactly one string value"),
                    ));
                }
            };
            principal_tags.push((key, value));
        }
        // Key order whatever the JSON map keeps (serde_json's `preserve_order` may be on in a
        // build that unifies features).
        principal_tags.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(SessionTagsClaim {
            principal_tags,
            transitive_tag_keys: raw.transitive_tag_keys,
        }))
    }

    /// AWS's source-identity claim (`https://aws.amazon.com/source_identity`), if present.
    ///
    /// # Errors
    /// [`ClaimError`] when it is not a string.
    pub fn source_identity(&self) -> Result<Option<&str>, ClaimError> {
        match self.map.get(AWS_SOURCE_IDENTITY_CLAIM) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ClaimError::new(
                AWS_SOURCE_IDENTITY_CLAIM,
                "is not a string",
            )),
        }
    }

    fn typed<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, ClaimError> {
        self.map
            .get(name)
            .map(|v| {
                T::deserialize(v).map_err(|e| ClaimError::new(name, format!("is malformed: {e}")))
            })
            .transpose()
    }
}

/// The `kubernetes.io` claim (kube-apiserver `pkg/serviceaccount/claims.go`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct KubernetesClaims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to, for projected tokens.
    #[serde(default)]
    pub pod: Option<ObjectRef>,
    /// The node the pod runs on (Kubernetes 1.30+ with node info in tokens).
    #[serde(default)]
    pub node: Option<ObjectRef>,
    /// The secret the token is bound to, for `TokenRequest`s bound to a Secret.
    #[serde(default)]
    pub secret: Option<ObjectRef>,
    /// For extended-expiry legacy tokens: when clients should warn about stale use.
    #[serde(default)]
    pub warnafter: Option<i64>,
}

/// A bound object reference: `{name, uid}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ObjectRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// AWS's session tags carried in a web identity token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTagsClaim {
    /// `(key, value)` pairs, in key order.
    pub principal_tags: Vec<(String, String)>,
    /// Keys that pass on to chained sessions.
    pub transitive_tag_keys: Vec<String>,
}

#[derive(Deserialize)]
struct RawTagsClaim {
    #[serde(default)]
    principal_tags: Map<String, Value>,
    #[serde(default)]
    transitive_tag_keys: Vec<String>,
}
