//! The pure core: given a Pod, the identity its ServiceAccount resolves to and the webhook's flags,
//! compute the JSON Patch that amazon-eks-pod-identity-webhook would apply. No I/O, no clock, no
//! randomness (the one random input, the Pod Identity token jitter, is drawn by the caller and
//! passed in [`Identity::expiration_jitter`]).
//!
//! Upstream replaces the whole `/spec/containers` array; we emit one `add` per env var and mount
//! instead. The resulting Pod is the same (same names, values and order), but fields that our
//! Kubernetes schema version does not know survive, and a reinvocation after another webhook added
//! a container cannot clobber it.

use std::collections::{BTreeMap, HashSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, KeyToPath, Pod, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use serde_json::Value;

/// `--annotation-prefix` default.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "eks.amazonaws.com";
/// `--token-expiration` default, and the expiration that Pod Identity tokens jitter away from.
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 86_400;
/// upstream `pkg.ValidateMinTokenExpiration`: kubelet refuses projected tokens shorter than this.
pub const MIN_TOKEN_EXPIRATION: i64 = 600;
/// Pod Identity tokens with the default lifetime get up to this much taken off
/// (upstream `addJitterToDefaultToken`: uniform in [79200, 86400]).
pub const MAX_EXPIRATION_JITTER: i64 = 7_200;
/// The label put on pods mutated in Pod Identity (container credentials) mode (upstream PR #295).
/// Upstream hard-codes this key; it does not follow `--annotation-prefix`.
pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";

const IRSA_VOLUME_NAME: &str = "aws-iam-token";
/// The ConfigMap volume with the CA bundle for podiam's STS (`--ca-bundle-configmap`).
pub const CA_BUNDLE_VOLUME_NAME: &str = "podiam-ca-bundle";
/// `--ca-bundle-mount-path` default.
pub const DEFAULT_CA_BUNDLE_MOUNT_PATH: &str = "/var/run/secrets/podiam/ca";
/// The file name of the bundle in its volume.
const CA_BUNDLE_FILE: &str = "ca-bundle.pem";
const IRSA_TOKEN_PATH: &str = "token";

/// Annotation suffixes, joined to the prefix with `/` (upstream `pkg/annotations.go`).
pub mod annotation {
    /// ServiceAccount: the role to assume with web identity.
    pub const ROLE_ARN: &str = "role-arn";
    /// ServiceAccount: the token audience (overrides `--token-audience`).
    pub const AUDIENCE: &str = "audience";
    /// ServiceAccount: `AWS_STS_REGIONAL_ENDPOINTS=regional` (overrides `--sts-regional-endpoint`).
    pub const STS_REGIONAL_ENDPOINTS: &str = "sts-regional-endpoints";
    /// ServiceAccount and Pod: projected token lifetime in seconds.
    pub const TOKEN_EXPIRATION: &str = "token-expiration";
    /// Pod: one CSV record of container names to leave alone.
    pub const SKIP_CONTAINERS: &str = "skip-containers";
    /// ServiceAccount (podiam): `AWS_ENDPOINT_URL_STS` for its IRSA pods (overrides
    /// `--sts-endpoint`; an empty value injects none).
    pub const STS_ENDPOINT: &str = "sts-endpoint";
}

/// The Pod Identity (container credentials) flags, `--container-credentials-*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCredentialsConfig {
    /// `--container-credentials-audience`.
    pub audience: String,
    /// `--container-credentials-token-mount-path`.
    pub mount_path: String,
    /// `--container-credentials-token-volume-name`.
    pub volume_name: String,
    /// `--container-credentials-token-path`.
    pub token_path: String,
    /// `--container-credentials-full-uri`.
    pub full_uri: String,
}

impl Default for ContainerCredentialsConfig {
    fn default() -> Self {
        Self {
            audience: "pods.eks.amazonaws.com".to_owned(),
            mount_path: "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount".to_owned(),
            volume_name: "eks-pod-identity-token".to_owned(),
            token_path: "eks-pod-identity-token".to_owned(),
            full_uri: "http://169.254.170.23/v1/credentials".to_owned(),
        }
    }
}

/// The webhook flags that shape a mutation, with upstream's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--annotation-prefix`.
    pub annotation_prefix: String,
    /// `--token-audience`.
    pub token_audience: String,
    /// `--token-mount-path`.
    pub token_mount_path: String,
    /// `--token-expiration`, already raised to [`MIN_TOKEN_EXPIRATION`].
    pub token_expiration: i64,
    /// `--aws-default-region`; empty means no region variables.
    pub aws_default_region: String,
    /// `--sts-regional-endpoint`.
    pub sts_regional_endpoint: bool,
    /// `--container-credentials-*`.
    pub container_credentials: ContainerCredentialsConfig,
    /// `--sts-endpoint` (podiam): `AWS_ENDPOINT_URL_STS` for IRSA pods, so that their SDKs ask
    /// podiam's STS (which brokers roles of other accounts); empty: none.
    pub sts_endpoint: String,
    /// `--ca-bundle-configmap` (podiam): with an STS endpoint, the CA bundle that verifies it.
    pub ca_bundle: Option<CaBundle>,
}

/// A CA bundle from a ConfigMap in the pod's namespace, mounted read-only and named by
/// `AWS_CA_BUNDLE`. The SDKs use it for every AWS endpoint, not only STS: it must hold the
/// public roots too (for S3 and the rest), not podiam's CA alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    /// `--ca-bundle-configmap`: the ConfigMap's name.
    pub config_map: String,
    /// `--ca-bundle-key`: the key in it that holds the PEM bundle.
    pub key: String,
    /// `--ca-bundle-mount-path`.
    pub mount_path: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            annotation_prefix: DEFAULT_ANNOTATION_PREFIX.to_owned(),
            token_audience: "sts.amazonaws.com".to_owned(),
            token_mount_path: "/var/run/secrets/eks.amazonaws.com/serviceaccount".to_owned(),
            token_expiration: DEFAULT_TOKEN_EXPIRATION,
            aws_default_region: String::new(),
            sts_regional_endpoint: false,
            container_credentials: ContainerCredentialsConfig::default(),
            sts_endpoint: String::new(),
            ca_bundle: None,
        }
    }
}

impl Config {
    /// The full annotation key for `suffix` under `--annotation-prefix`.
    pub fn annotation_key(&self, suffix: &str) -> String {
        format!("{}/{}", self.annotation_prefix, suffix)
    }
}

/// How the pod gets its AWS credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// IRSA: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` (STS `AssumeRoleWithWebIdentity`).
    WebIdentity {
        /// The role ARN from the ServiceAccount annotation or the ConfigMap.
        role_arn: String,
    },
    /// EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    ContainerCredentials,
}

/// What the pod's ServiceAccount resolves to. `None` fields fall back to the flags in [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// IRSA or Pod Identity.
    pub credentials: Credentials,
    /// IRSA token audience from the SA annotation or ConfigMap; `Some("")` means the API server's
    /// default audience. Pod Identity always uses `--container-credentials-audience`.
    pub audience: Option<String>,
    /// `AWS_STS_REGIONAL_ENDPOINTS` from the SA annotation or ConfigMap.
    pub regional_sts: Option<bool>,
    /// Token lifetime from the SA annotation or ConfigMap (a pod annotation still beats it).
    pub token_expiration: Option<i64>,
    /// Seconds taken off a Pod Identity token whose lifetime is exactly the default, so that a
    /// fleet of pods does not refresh in lockstep; the caller draws it uniformly from
    /// `0..=MAX_EXPIRATION_JITTER`. Ignored in IRSA mode.
    pub expiration_jitter: i64,
    /// `AWS_ENDPOINT_URL_STS` from the SA annotation (`Some("")`: none, whatever the flag).
    /// IRSA only.
    pub sts_endpoint: Option<String>,
}

impl Identity {
    /// An IRSA identity with every optional setting left to the flags.
    pub fn web_identity(role_arn: impl Into<String>) -> Self {
        Self {
            credentials: Credentials::WebIdentity {
                role_arn: role_arn.into(),
            },
            audience: None,
            regional_sts: None,
            token_expiration: None,
            expiration_jitter: 0,
            sts_endpoint: None,
        }
    }

    /// A Pod Identity identity with every optional setting left to the flags.
    pub fn container_credentials() -> Self {
        Self {
            credentials: Credentials::ContainerCredentials,
            audience: None,
            regional_sts: None,
            token_expiration: None,
            expiration_jitter: 0,
            sts_endpoint: None,
        }
    }

    /// Which pod-count label this identity is counted under (upstream metric `method` label).
    pub fn method(&self) -> &'static str {
        match self.credentials {
            Credentials::WebIdentity { .. } => "sts_web_identity",
            Credentials::ContainerCredentials => "container_credentials",
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits only, no spaces.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// upstream `pkg.ValidateMinTokenExpiration`.
pub fn clamp_token_expiration(seconds: i64) -> i64 {
    seconds.max(MIN_TOKEN_EXPIRATION)
}

/// The pod annotation `<prefix>/skip-containers`: one CSV record; a record that does not parse
/// skips nothing (upstream `getContainersToSkip` with `encoding/csv`).
fn containers_to_skip(
    annotations: Option<&BTreeMap<String, String>>,
    cfg: &Config,
) -> HashSet<String> {
    annotations
        .and_then(|a| a.get(&cfg.annotation_key(annotation::SKIP_CONTAINERS)))
        .and_then(|v| parse_csv_record(v))
        .map(|names| names.into_iter().collect())
        .unwrap_or_default()
}

/// The first record of `s` as Go's `csv.Reader.Read` returns it (comma `,`, quotes per RFC 4180,
/// `LazyQuotes` off), or `None` on a parse error or an empty input.
pub fn parse_csv_record(s: &str) -> Option<Vec<String>> {
    // csv.Reader skips leading empty lines; the record ends at the first unquoted newline.
    let s = s.trim_start_matches(['\r', '\n']);
    if s.is_empty() {
        return None;
    }
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return None, // extraneous or missing " in quoted-field
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            field.push('"');
                            chars.next();
                        }
                        Some(',') | Some('\n') | Some('\r') | None => break,
                        Some(_) => return None,
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' || c == '\r' {
                    break;
                }
                if c == '"' {
                    return None; // bare " in non-quoted-field
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    Some(fields)
}

/// Go's `path.Join`/`filepath.Join` on Linux: join the non-empty parts with `/`, then `Clean`.
pub fn join_path(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return String::new();
    }
    let rooted = joined.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

const OS_LABELS: [&str; 2] = ["kubernetes.io/os", "beta.kubernetes.io/os"];

/// Whether the pod can only be scheduled on Windows nodes: a `nodeSelector` on
/// `kubernetes.io/os` or `beta.kubernetes.io/os` equal to `windows` (upstream), or (our fix for
/// upstream #57) required node affinity where every node selector term (terms are ORed) has an
/// `In` expression on one of those labels whose values are all `windows`.
pub fn targets_windows(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if let Some(sel) = spec.node_selector.as_ref()
        && OS_LABELS
            .iter()
            .any(|k| sel.get(*k).is_some_and(|v| v == "windows"))
    {
        return true;
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    !terms.is_empty()
        && terms.iter().all(|term| {
            term.match_expressions.iter().flatten().any(|req| {
                OS_LABELS.contains(&req.key.as_str())
                    && req.operator == "In"
                    && req
                        .values
                        .as_ref()
                        .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x == "windows"))
            })
        })
}

/// Everything [`mutate`] decided before touching containers; exposed for logging and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Projected volume name.
    pub volume_name: String,
    /// Where the volume is mounted in each container.
    pub mount_path: String,
    /// File name of the token inside the volume.
    pub token_path: String,
    /// Token audience; empty means the API server's default.
    pub audience: String,
    /// `expirationSeconds` of the projected token.
    pub expiration_seconds: i64,
    /// Whether `AWS_STS_REGIONAL_ENDPOINTS=regional` is injected.
    pub regional_sts: bool,
    /// The value of the token-file env var (Windows-style on Windows pods).
    pub token_file: String,
    /// The identity env vars, in order.
    pub identity_env: [(&'static str, String); 2],
    /// IRSA through podiam: `AWS_ENDPOINT_URL_STS` and, with a CA bundle, `AWS_CA_BUNDLE`.
    pub sts_env: Vec<(&'static str, String)>,
    /// The CA bundle volume to add and mount, with `AWS_CA_BUNDLE`.
    pub ca_bundle: Option<CaBundle>,
}

/// Resolve flags, ServiceAccount/ConfigMap settings and pod annotations into one [`Plan`].
///
/// Precedence (upstream `buildPodPatchConfig`): audience and regional STS are SA annotation >
/// flag; token expiration is pod annotation > SA annotation > flag.
pub fn plan(pod: &Pod, identity: &Identity, cfg: &Config) -> Plan {
    let pod_expiration = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&cfg.annotation_key(annotation::TOKEN_EXPIRATION)))
        .and_then(|v| parse_go_int(v))
        .map(clamp_token_expiration);
    let mut expiration_seconds = pod_expiration
        .or(identity.token_expiration)
        .unwrap_or(cfg.token_expiration);
    let regional_sts = identity.regional_sts.unwrap_or(cfg.sts_regional_endpoint);
    let windows = targets_windows(pod);
    let (volume_name, mount_path, token_path, audience) = match &identity.credentials {
        Credentials::WebIdentity { .. } => (
            IRSA_VOLUME_NAME.to_owned(),
            cfg.token_mount_path.clone(),
            IRSA_TOKEN_PATH.to_owned(),
            identity
                .audience
                .clone()
                .unwrap_or_else(|| cfg.token_audience.clone()),
        ),
        Credentials::ContainerCredentials => {
            let cc = &cfg.container_credentials;
            // upstream addJitterToDefaultToken: only the default lifetime is jittered.
            if expiration_seconds == DEFAULT_TOKEN_EXPIRATION {
                expiration_seconds -= identity.expiration_jitter.clamp(0, MAX_EXPIRATION_JITTER);
            }
            (
                cc.volume_name.clone(),
                cc.mount_path.clone(),
                cc.token_path.clone(),
                cc.audience.clone(),
            )
        }
    };
    // C:\var\run\secrets\eks.amazonaws.com\serviceaccount\token on Windows; the mountPath
    // stays unix.
    let file_path = |dir: &str, file: &str| {
        let path = join_path(&[dir, file]);
        if windows {
            format!("C:{}", path.replace('/', "\\"))
        } else {
            path
        }
    };
    let token_file = file_path(&mount_path, &token_path);
    let mut sts_env = Vec::new();
    let mut ca_bundle = None;
    if let Credentials::WebIdentity { .. } = &identity.credentials {
        let endpoint = identity.sts_endpoint.as_ref().unwrap_or(&cfg.sts_endpoint);
        if !endpoint.is_empty() {
            sts_env.push(("AWS_ENDPOINT_URL_STS", endpoint.clone()));
            if let Some(ca) = &cfg.ca_bundle {
                sts_env.push(("AWS_CA_BUNDLE", file_path(&ca.mount_path, CA_BUNDLE_FILE)));
                ca_bundle = Some(ca.clone());
            }
        }
    }
    let identity_env = match &identity.credentials {
        Credentials::WebIdentity { role_arn } => [
            ("AWS_ROLE_ARN", role_arn.clone()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.clone()),
        ],
        Credentials::ContainerCredentials => [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                cfg.container_credentials.full_uri.clone(),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.clone()),
        ],
    };
    Plan {
        volume_name,
        mount_path,
        token_path,
        audience,
        expiration_seconds,
        regional_sts,
        token_file,
        identity_env,
        sts_env,
        ca_bundle,
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serialising k8s-openapi structs into a `Value` cannot fail: no maps with non-string keys.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// The env vars and mount one container needs (upstream `addEnvToContainer`), as patch ops.
fn container_ops(
    ops: &mut Vec<PatchOperation>,
    list: &str,
    index: &str,
    container: &Container,
    plan: &Plan,
    cfg: &Config,
) {
    let env = container.env.as_deref().unwrap_or_default();
    let has = |names: &[&str]| env.iter().any(|e| names.contains(&e.name.as_str()));
    // Keys are checked as groups; a user value is never overwritten.
    let identity_defined = has(&[plan.identity_env[0].0, plan.identity_env[1].0]);
    let region_defined = has(&["AWS_REGION", "AWS_DEFAULT_REGION"]);
    let sts_defined = has(&["AWS_STS_REGIONAL_ENDPOINTS"]);

    let mut new_env: Vec<EnvVar> = Vec::new();
    if !sts_defined && plan.regional_sts {
        new_env.push(env_var("AWS_STS_REGIONAL_ENDPOINTS", "regional"));
    }
    if !region_defined && !cfg.aws_default_region.is_empty() {
        new_env.push(env_var("AWS_DEFAULT_REGION", &cfg.aws_default_region));
        new_env.push(env_var("AWS_REGION", &cfg.aws_default_region));
    }
    if !identity_defined {
        for (name, value) in &plan.identity_env {
            new_env.push(env_var(name, value));
        }
    }
    // Each on its own: a user's endpoint or bundle is kept.
    for (name, value) in &plan.sts_env {
        if !has(&[name]) {
            new_env.push(env_var(name, value));
        }
    }
    push_items(
        ops,
        &[list, index, "env"],
        container.env.is_some(),
        &new_env,
    );

    // Upstream returns early, without the mount, when a container already has an identity, a region
    // and the STS variable (fixture rawPodHasAll). We always mount the token: the user's
    // AWS_WEB_IDENTITY_TOKEN_FILE most likely points at it. A same-named mount is kept whatever its
    // mountPath, as upstream does.
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mut wanted = vec![(plan.volume_name.clone(), plan.mount_path.clone())];
    if let Some(ca) = &plan.ca_bundle {
        wanted.push((CA_BUNDLE_VOLUME_NAME.to_owned(), ca.mount_path.clone()));
    }
    let new_mounts: Vec<VolumeMount> = wanted
        .into_iter()
        .filter(|(name, _)| !mounts.iter().any(|m| &m.name == name))
        .map(|(name, mount_path)| VolumeMount {
            name,
            read_only: Some(true),
            mount_path,
            ..VolumeMount::default()
        })
        .collect();
    push_items(
        ops,
        &[list, index, "volumeMounts"],
        container.volume_mounts.is_some(),
        &new_mounts,
    );
}

/// Append `items` to the array at `path`, creating it when the field is absent.
fn push_items<T: serde::Serialize>(
    ops: &mut Vec<PatchOperation>,
    path: &[&str; 3],
    exists: bool,
    items: &[T],
) {
    if items.is_empty() {
        return;
    }
    let [list, index, field] = *path;
    if exists {
        for item in items {
            ops.push(add(&["spec", list, index, field, "-"], to_value(item)));
        }
    } else {
        ops.push(add(&["spec", list, index, field], to_value(&items)));
    }
}

/// The JSON Patch that gives `pod` the AWS identity `identity`; empty when the pod already has
/// everything (so the server sends no patch at all).
///
/// Op order follows upstream `getPodSpecPatch`: the Pod Identity label, the projected volume
/// (prepended, or a new `volumes` array), then containers, then init containers (native sidecars
/// included; ephemeral containers are not touched, as upstream).
pub fn mutate(pod: &Pod, identity: &Identity, cfg: &Config) -> Vec<PatchOperation> {
    let plan = plan(pod, identity, cfg);
    let mut ops = Vec::new();

    if identity.credentials == Credentials::ContainerCredentials {
        match pod.metadata.labels.as_ref() {
            None => ops.push(add(
                &["metadata", "labels"],
                serde_json::json!({ POD_IDENTITY_LABEL: "enabled" }),
            )),
            Some(labels)
                if labels.get(POD_IDENTITY_LABEL).map(String::as_str) != Some("enabled") =>
            {
                ops.push(add(
                    &["metadata", "labels", POD_IDENTITY_LABEL],
                    Value::from("enabled"),
                ));
            }
            Some(_) => {}
        }
    }

    let spec = pod.spec.as_ref();
    let volumes = spec.and_then(|s| s.volumes.as_ref());
    // Existence is by name only, as upstream: a same-named volume of any kind is left alone.
    if !volumes.is_some_and(|v| v.iter().any(|v| v.name == plan.volume_name)) {
        let volume = Volume {
            name: plan.volume_name.clone(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: (!plan.audience.is_empty()).then(|| plan.audience.clone()),
                        expiration_seconds: Some(plan.expiration_seconds),
                        path: plan.token_path.clone(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        };
        match volumes {
            None => ops.push(add(
                &["spec", "volumes"],
                Value::Array(vec![to_value(&volume)]),
            )),
            Some(_) => ops.push(add(&["spec", "volumes", "0"], to_value(&volume))),
        }
    }

    if let Some(ca) = &plan.ca_bundle {
        ca_bundle_volume(&mut ops, pod, ca);
    }

    let skip = containers_to_skip(pod.metadata.annotations.as_ref(), cfg);
    let lists: [(&str, Option<&Vec<Container>>); 2] = [
        ("containers", spec.map(|s| &s.containers)),
        (
            "initContainers",
            spec.and_then(|s| s.init_containers.as_ref()),
        ),
    ];
    for (list, containers) in lists {
        for (i, container) in containers.into_iter().flatten().enumerate() {
            if !skip.contains(&container.name) {
                container_ops(&mut ops, list, &i.to_string(), container, &plan, cfg);
            }
        }
    }
    ops
}

/// The ConfigMap volume of the CA bundle, appended unless one of its name is there (the token
/// volume's op comes first, so `volumes` exists by now).
fn ca_bundle_volume(ops: &mut Vec<PatchOperation>, pod: &Pod, ca: &CaBundle) {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    if volumes.is_some_and(|v| v.iter().any(|v| v.name == CA_BUNDLE_VOLUME_NAME)) {
        return;
    }
    let volume = Volume {
        name: CA_BUNDLE_VOLUME_NAME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: ca.config_map.clone(),
            items: Some(vec![KeyToPath {
                key: ca.key.clone(),
                path: CA_BUNDLE_FILE.to_owned(),
                ..KeyToPath::default()
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let token_volume_added = ops
        .iter()
        .any(|op| matches!(op, PatchOperation::Add(a) if a.path.as_str() == "/spec/volumes"));
    if volumes.is_none() && !token_volume_added {
        ops.push(add(
            &["spec", "volumes"],
            Value::Array(vec![to_value(&volume)]),
        ));
    } else {
        ops.push(add(&["spec", "volumes", "-"], to_value(&volume)));
    }
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
