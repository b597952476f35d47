//! The entities podiam keeps, in AWS's words. Times are milliseconds since the Unix epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub role_name: String,
    pub path: String,
    /// `AROA…`, 21 characters.
    pub role_id: String,
    pub arn: String,
    pub create_date: i64,
    /// The trust policy, as the caller sent it (AWS returns it URL-encoded).
    pub assume_role_policy_document: String,
    pub description: Option<String>,
    /// Seconds, 3,600–43,200.
    pub max_session_duration: u32,
    pub permissions_boundary_arn: Option<String>,
    pub tags: Vec<Tag>,
    /// Inline policies by name (sorted by name, as IAM lists them).
    pub inline_policies: BTreeMap<String, String>,
    pub attached_policy_arns: Vec<String>,
    pub last_used: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// `v1`, `v2`, …
    pub version_id: String,
    pub document: String,
    pub create_date: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub policy_name: String,
    pub path: String,
    /// `ANPA…`.
    pub policy_id: String,
    pub arn: String,
    pub description: Option<String>,
    pub create_date: i64,
    pub update_date: i64,
    pub default_version_id: String,
    /// At most five; AWS makes the caller delete one before creating a sixth.
    pub versions: Vec<PolicyVersion>,
    /// The next version number to hand out (`v{n}`), never reused.
    pub next_version: u32,
    pub tags: Vec<Tag>,
    /// Shipped AWS managed policy (`arn:aws:iam::aws:policy/…`): read-only.
    pub aws_managed: bool,
}

impl ManagedPolicy {
    pub fn default_version(&self) -> Option<&PolicyVersion> {
        self.versions
            .iter()
            .find(|v| v.version_id == self.default_version_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcProvider {
    /// `arn:aws:iam::ACCOUNT:oidc-provider/host/path`.
    pub arn: String,
    /// The issuer URL as registered (`https://host/path`).
    pub url: String,
    pub client_ids: Vec<String>,
    pub thumbprints: Vec<String>,
    pub create_date: i64,
    pub tags: Vec<Tag>,
    /// A podiam extension: the issuer's JWKS given at creation, for clusters whose issuer is not
    /// reachable (the content of kube-apiserver's `/openid/v1/jwks`).
    pub static_jwks: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_name: String,
    pub path: String,
    /// `AIDA…`.
    pub user_id: String,
    pub arn: String,
    pub create_date: i64,
    pub tags: Vec<Tag>,
    pub inline_policies: BTreeMap<String, String>,
    pub attached_policy_arns: Vec<String>,
    /// podiam's bootstrap administrator: may do everything, as an account's root user.
    pub admin: bool,
}

/// An IAM group: its policies apply to every user in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub group_name: String,
    pub path: String,
    /// `AGPA…`.
    pub group_id: String,
    pub arn: String,
    pub create_date: i64,
    /// Inline policies by name (sorted by name, as IAM lists them).
    pub inline_policies: BTreeMap<String, String>,
    pub attached_policy_arns: Vec<String>,
    /// The members, by user ID (`AIDA…`), in the order they were added: renaming a user or the
    /// group changes no membership, and a user deleted and created again is not a member.
    pub user_ids: Vec<String>,
}

impl Group {
    pub fn has_member(&self, user: &User) -> bool {
        self.user_ids.contains(&user.user_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// `AKIA…`.
    pub access_key_id: String,
    /// Kept to verify SigV4 signatures, which need the secret itself.
    pub secret_access_key: String,
    pub user_name: String,
    /// `Active` or `Inactive`.
    pub status: String,
    pub create_date: i64,
}

/// A key of the built-in OIDC issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// PKCS#8 DER, base64.
    pub private_key_pkcs8: String,
    pub created: i64,
    /// Set when a newer key took over: still published until then, so tokens it signed verify.
    pub retire_after: Option<i64>,
}

/// A key that seals session tokens (AES-256-GCM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealingKey {
    pub id: String,
    /// 32 bytes, base64.
    pub key: String,
    pub created: i64,
    pub retire_after: Option<i64>,
}

/// A Kubernetes cluster registered for EKS Pod Identity: where its tokens' keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    /// `arn:aws:eks:REGION:ACCOUNT:cluster/NAME`.
    pub arn: String,
    /// The kube-apiserver's `--service-account-issuer` (`iss` of its tokens).
    pub issuer_url: String,
    /// The cluster's JWKS, when its issuer cannot be reached (`kubectl get --raw /openid/v1/jwks`).
    pub static_jwks: Option<String>,
    pub created_at: i64,
    pub tags: Vec<Tag>,
}

/// EKS's `PodIdentityAssociation`: a ServiceAccount in a cluster gets a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentityAssociation {
    pub cluster_name: String,
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
    /// `arn:aws:eks:REGION:ACCOUNT:podidentityassociation/CLUSTER/a-…`.
    pub association_arn: String,
    /// `a-` and 17 lowercase letters and digits.
    pub association_id: String,
    pub tags: Vec<Tag>,
    pub created_at: i64,
    pub modified_at: i64,
    pub disable_session_tags: bool,
    /// The association role chains into this role, with `external_id` in `sts:ExternalId`.
    pub target_role_arn: Option<String>,
    pub external_id: Option<String>,
    /// A session policy applied to the pod's credentials.
    pub policy: Option<String>,
    pub owner_arn: Option<String>,
}

/// One kind of entity by key, as a persistent (structurally shared) B-tree: a clone is O(1) and
/// an insert copies the O(log n) nodes on its path, so a write does not copy the whole state and
/// readers of the previous snapshot keep theirs unchanged.
pub type Entities<T> = imbl::OrdMap<String, T>;

/// Everything the server keeps, loaded into memory at start. Cloning it is cheap (see
/// [`Entities`]): `Shared::write` clones the snapshot and applies its changes to the copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// By lowercased role name: AWS role names are unique regardless of case.
    pub roles: Entities<Role>,
    /// By ARN.
    pub policies: Entities<ManagedPolicy>,
    /// By ARN.
    pub oidc_providers: Entities<OidcProvider>,
    /// By lowercased user name.
    pub users: Entities<User>,
    /// By lowercased group name: AWS group names are unique regardless of case.
    pub groups: Entities<Group>,
    /// By access key ID.
    pub access_keys: Entities<AccessKey>,
    /// By key ID.
    pub signing_keys: Entities<SigningKey>,
    /// By key ID.
    pub sealing_keys: Entities<SealingKey>,
    /// By cluster name.
    pub clusters: Entities<Cluster>,
    /// By association ID.
    pub pod_identity_associations: Entities<PodIdentityAssociation>,
    /// Account ID, region, issuer URL and other settings fixed at first start.
    pub settings: Entities<String>,
}

/// One write: the new value of an entity, or `None` to delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Role(String, Option<Role>),
    Policy(String, Option<ManagedPolicy>),
    OidcProvider(String, Option<OidcProvider>),
    User(String, Option<User>),
    Group(String, Option<Group>),
    AccessKey(String, Option<AccessKey>),
    SigningKey(String, Option<SigningKey>),
    SealingKey(String, Option<SealingKey>),
    Setting(String, Option<String>),
    Cluster(String, Option<Cluster>),
    PodIdentityAssociation(String, Option<PodIdentityAssociation>),
}

impl State {
    /// The groups `user` is in, in group-name order.
    pub fn groups_of<'s>(&'s self, user: &'s User) -> impl Iterator<Item = &'s Group> + 's {
        self.groups.values().filter(move |g| g.has_member(user))
    }

    /// The entity a change would replace, as a change of the same kind (`None` inside when absent):
    /// what a compare-and-swap write expects to find.
    pub fn current(&self, change: &Change) -> Change {
        fn get<T: Clone>(map: &Entities<T>, key: &str) -> Option<T> {
            map.get(key).cloned()
        }
        match change {
            Change::Role(k, _) => Change::Role(k.clone(), get(&self.roles, k)),
            Change::Policy(k, _) => Change::Policy(k.clone(), get(&self.policies, k)),
            Change::OidcProvider(k, _) => {
                Change::OidcProvider(k.clone(), get(&self.oidc_providers, k))
            }
            Change::User(k, _) => Change::User(k.clone(), get(&self.users, k)),
            Change::Group(k, _) => Change::Group(k.clone(), get(&self.groups, k)),
            Change::AccessKey(k, _) => Change::AccessKey(k.clone(), get(&self.access_keys, k)),
            Change::SigningKey(k, _) => Change::SigningKey(k.clone(), get(&self.signing_keys, k)),
            Change::SealingKey(k, _) => Change::SealingKey(k.clone(), get(&self.sealing_keys, k)),
            Change::Setting(k, _) => Change::Setting(k.clone(), get(&self.settings, k)),
            Change::Cluster(k, _) => Change::Cluster(k.clone(), get(&self.clusters, k)),
            Change::PodIdentityAssociation(k, _) => {
                Change::PodIdentityAssociation(k.clone(), get(&self.pod_identity_associations, k))
            }
        }
    }

    /// Applies a change to the in-memory state, as the store applies it to disk.
    pub fn apply(&mut self, change: &Change) {
        fn put<T: Clone>(map: &mut Entities<T>, key: &str, value: &Option<T>) {
            match value {
                Some(v) => {
                    map.insert(key.to_string(), v.clone());
                }
                None => {
                    map.remove(key);
                }
            }
        }
        match change {
            Change::Role(k, v) => put(&mut self.roles, k, v),
            Change::Policy(k, v) => put(&mut self.policies, k, v),
            Change::OidcProvider(k, v) => put(&mut self.oidc_providers, k, v),
            Change::User(k, v) => put(&mut self.users, k, v),
            Change::Group(k, v) => put(&mut self.groups, k, v),
            Change::AccessKey(k, v) => put(&mut self.access_keys, k, v),
            Change::SigningKey(k, v) => put(&mut self.signing_keys, k, v),
            Change::SealingKey(k, v) => put(&mut self.sealing_keys, k, v),
            Change::Setting(k, v) => put(&mut self.settings, k, v),
            Change::Cluster(k, v) => put(&mut self.clusters, k, v),
            Change::PodIdentityAssociation(k, v) => put(&mut self.pod_identity_associations, k, v),
        }
    }
}
