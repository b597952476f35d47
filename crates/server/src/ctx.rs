//! What one request's handler sees: the shared state, the caller, the facts of the request (its
//! one reading of the clock among them), and where its audit event goes.

use std::time::SystemTime;

use podiam_identity::FixedClock;
use podiam_store::{Role, State};

use crate::actions::{RequestKeys, context_for};
use crate::audit::Audit;
use crate::auth::{Caller, RequestFacts, authorize};
use crate::error::AwsError;
use crate::state::Shared;

/// What one request handler sees.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub caller: Option<Caller>,
    pub facts: RequestFacts,
    pub request_id: &'a str,
    pub audit: &'a Audit,
    /// The CLI on a data directory, not a running server: whether the server brokers to an
    /// upstream STS (`--upstream-sts`) is not known here, so roles of other accounts are
    /// accepted (the server refuses their pods if it does not broker).
    pub offline: bool,
}

impl Ctx<'_> {
    /// The authenticated caller; unsigned requests get `MissingAuthenticationToken`.
    pub fn signed_caller(&self) -> Result<&Caller, AwsError> {
        self.caller
            .as_ref()
            .ok_or_else(AwsError::missing_authentication)
    }

    /// The request's time: read once from the server's clock when the request arrived.
    pub fn now(&self) -> SystemTime {
        self.clock().0
    }

    /// A clock that answers the request's time, for the libraries that take one.
    pub fn clock(&self) -> FixedClock {
        self.facts.clock()
    }

    /// `arn:aws:iam::ACCOUNT:{resource}`.
    pub fn iam_arn(&self, resource: &str) -> String {
        format!(
            "arn:{}:iam::{}:{resource}",
            self.shared.config.partition, self.shared.config.account_id
        )
    }

    /// `arn:aws:eks:REGION:ACCOUNT:cluster/{name}`.
    pub fn cluster_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:eks:{}:{}:cluster/{name}",
            self.shared.config.partition, self.shared.config.region, self.shared.config.account_id
        )
    }

    /// `arn:aws:eks:REGION:ACCOUNT:podidentityassociation/{cluster}/{id}`.
    pub fn association_arn(&self, cluster: &str, id: &str) -> String {
        format!(
            "arn:{}:eks:{}:{}:podidentityassociation/{cluster}/{id}",
            self.shared.config.partition, self.shared.config.region, self.shared.config.account_id
        )
    }

    /// May the caller perform `action` on `resource`?
    pub fn check(&self, state: &State, action: &str, resource: &str) -> Result<(), AwsError> {
        self.check_with(state, action, resource, &RequestKeys::default())
    }

    /// May the caller perform `action` on `resource`, with what the request holds? Only the
    /// keys [`crate::actions`] documents for the action reach the engine.
    pub(crate) fn check_with(
        &self,
        state: &State,
        action: &str,
        resource: &str,
        keys: &RequestKeys<'_>,
    ) -> Result<(), AwsError> {
        self.check_with_keys(state, action, resource, &context_for(action, keys))
    }

    /// May the caller perform `action` on `resource`, with these request context keys, each with
    /// its values (`aws:TagKeys` holds several)?
    pub fn check_with_keys(
        &self,
        state: &State,
        action: &str,
        resource: &str,
        context: &[(String, Vec<String>)],
    ) -> Result<(), AwsError> {
        authorize(
            self.shared,
            state,
            self.signed_caller()?,
            &self.facts,
            action,
            resource,
            context,
        )
    }

    /// Checks an action on a role: its tags are `aws:ResourceTag/…` and `iam:ResourceTag/…`,
    /// its boundary `iam:PermissionsBoundary` unless the request sets another.
    pub(crate) fn check_role_with<'k>(
        &self,
        state: &State,
        action: &str,
        role: &'k Role,
        mut keys: RequestKeys<'k>,
    ) -> Result<(), AwsError> {
        keys = keys.on_iam(&role.tags);
        if keys.permissions_boundary.is_none() {
            keys.permissions_boundary = role.permissions_boundary_arn.as_deref();
        }
        self.check_with(state, action, &role.arn, &keys)
    }
}
