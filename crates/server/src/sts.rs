//! The STS API (awsQuery, Version 2011-06-15): AssumeRoleWithWebIdentity (unsigned: the JWT is
//! the credential), AssumeRole and GetCallerIdentity.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use podiam_identity::credentials::{
    DurationError, assumed_role_arn, mint_temporary_credentials, session_duration,
};
use podiam_identity::jwt::{JwtError, UnverifiedJwt};
use podiam_identity::session::{SessionSource, SessionTag};
use podiam_identity::{Clock, PrefetchedRng, SessionClaims, SystemClock, SystemRng, Validation};
use podiam_policy::{
    Context, Policy, PolicyKind, PolicySet, Request, RequestPrincipal, evaluate_trust,
    evaluate_with_trace,
};
use podiam_store::{OidcProvider, Role, State};

use crate::Ctx;
use crate::audit::Event;
use crate::auth::{Caller, caller_context, caller_policies, millis};
use crate::error::AwsError;
use crate::iam::{date, provider_key};
use crate::query::Params;
use crate::xml::Xml;

pub const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// AWS: WebIdentityToken is at most 20,000 characters.
const MAX_WEB_IDENTITY_TOKEN: usize = 20_000;

pub fn invalid_identity_token(message: impl Into<String>) -> AwsError {
    AwsError::new("InvalidIdentityToken", StatusCode::BAD_REQUEST, message)
}

fn expired_token(message: impl Into<String>) -> AwsError {
    AwsError::new("ExpiredTokenException", StatusCode::BAD_REQUEST, message)
}

pub fn packed_too_large(message: impl Into<String>) -> AwsError {
    AwsError::new("PackedPolicyTooLarge", StatusCode::BAD_REQUEST, message)
}

/// Maps a token verification failure to the STS code SDKs expect, naming the failed check.
pub fn jwt_error(e: &JwtError) -> AwsError {
    match e {
        JwtError::TokenExpired { .. } => expired_token(format!("Token expired: {e}")),
        JwtError::AudienceMismatch { .. } => {
            invalid_identity_token(format!("Incorrect token audience: {e}"))
        }
        JwtError::TokenTooLarge { .. } => AwsError::validation(format!(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: {e}"
        )),
        _ => invalid_identity_token(format!("The web identity token is not valid: {e}")),
    }
}

pub async fn handle(ctx: &Ctx<'_>, action: &str, p: &Params) -> Result<String, AwsError> {
    match action {
        "AssumeRoleWithWebIdentity" => assume_role_with_web_identity(ctx, p).await,
        "AssumeRole" => assume_role(ctx, p).await,
        "GetCallerIdentity" => get_caller_identity(ctx),
        other => Err(AwsError::invalid_action(other)),
    }
}

fn session_name_rule(name: &str) -> Result<(), AwsError> {
    let ok = (2..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64"
        )))
    }
}

fn role_by_arn<'s>(state: &'s State, arn: &str, action: &str) -> Result<&'s Role, AwsError> {
    if arn.len() < 20 || !arn.starts_with("arn:") {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
        )));
    }
    // AWS answers AccessDenied, not NoSuchEntity, so callers cannot probe for role names.
    state.roles.values().find(|r| r.arn == arn).ok_or_else(|| {
        AwsError::access_denied(format!("Not authorized to perform {action}: no role {arn}"))
    })
}

/// `Policy` and `PolicyArns.member.N.arn`: parsed, size-checked, and resolved against the account.
#[derive(Clone)]
pub(crate) struct SessionPolicies {
    pub(crate) inline: Option<String>,
    pub(crate) arns: Vec<String>,
    /// Plain-text size against the 2,048 quota, as a percentage (PackedPolicySize).
    pub(crate) packed_percent: u32,
}

fn session_policies(ctx: &Ctx<'_>, state: &State, p: &Params) -> Result<SessionPolicies, AwsError> {
    let inline = p.get("Policy").map(str::to_string);
    let mut size = 0;
    if let Some(doc) = &inline {
        let compiled = Policy::parse(doc, PolicyKind::Identity)
            .map_err(|e| AwsError::malformed_policy(e.to_string()))?;
        size += compiled.size;
    }
    let arns: Vec<String> = p
        .structs("PolicyArns")
        .into_iter()
        .filter_map(|m| m.get("arn").map(|s| s.to_string()))
        .collect();
    if arns.len() > 10 {
        return Err(AwsError::validation("At most 10 PolicyArns may be passed."));
    }
    for arn in &arns {
        if !state.policies.contains_key(arn) {
            return Err(AwsError::invalid_input(format!(
                "Policy {arn} does not exist or is not attachable."
            )));
        }
        size += arn.len();
    }
    let limit = ctx.shared.config.limits.session_policy;
    if size > limit {
        return Err(packed_too_large(format!(
            "Packed size of consumed session policies and session tags exceeds 100%: the session policies are {size} characters, over the limit of {limit}"
        )));
    }
    Ok(SessionPolicies {
        inline,
        arns,
        packed_percent: u32::try_from(size * 100 / limit.max(1)).unwrap_or(100),
    })
}

fn duration_error(e: DurationError) -> AwsError {
    AwsError::validation(format!(
        "The requested DurationSeconds exceeds the limit: {e}"
    ))
}

pub(crate) struct Minted {
    pub(crate) claims: SessionClaims,
    pub(crate) token: String,
}

/// What a new session is made of.
pub(crate) struct NewSession<'a> {
    pub(crate) role: &'a Role,
    pub(crate) session_name: &'a str,
    pub(crate) duration: Duration,
    pub(crate) tags: Vec<SessionTag>,
    pub(crate) transitive: Vec<String>,
    pub(crate) policies: &'a SessionPolicies,
    pub(crate) source_identity: Option<String>,
    pub(crate) source: SessionSource,
}

pub(crate) fn mint(ctx: &Ctx<'_>, s: NewSession<'_>) -> Result<Minted, AwsError> {
    let now =
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ctx.facts.now).unwrap_or(0));
    // Key ID (16 bytes), secret (30) and the token's nonce (12) from one draw.
    let rng = PrefetchedRng::<_, 64>::new(&SystemRng)
        .map_err(|e| AwsError::internal(format!("could not mint credentials: {e}")))?;
    let creds = mint_temporary_credentials(&rng, now, s.duration)
        .map_err(|e| AwsError::internal(format!("could not mint credentials: {e}")))?;
    let claims = SessionClaims {
        access_key_id: creds.access_key_id,
        secret_access_key: creds.secret_access_key,
        account_id: ctx.shared.config.account_id.clone(),
        assumed_role_arn: assumed_role_arn(&s.role.arn, s.session_name)
            .ok_or_else(|| AwsError::internal("role ARN is not an IAM role ARN"))?,
        role_arn: s.role.arn.clone(),
        role_id: s.role.role_id.clone(),
        role_session_name: s.session_name.to_string(),
        session_tags: s.tags,
        transitive_tag_keys: s.transitive,
        session_policy: s.policies.inline.clone(),
        session_policy_arns: s.policies.arns.clone(),
        source_identity: s.source_identity,
        issued_at: creds.issued_at,
        expires_at: creds.expiration,
        source: s.source,
    };
    let token = ctx
        .shared
        .keys()
        .sessions
        .seal(&claims, &rng)
        .map_err(|e| AwsError::internal(format!("could not seal the session token: {e}")))?;
    Ok(Minted { claims, token })
}

fn credentials_xml(x: &mut Xml, m: &Minted) {
    x.start("Credentials")
        .text_plain("AccessKeyId", m.claims.access_key_id.as_str())
        .text_plain(
            "SecretAccessKey",
            m.claims.secret_access_key.expose_secret(),
        )
        .text_plain("SessionToken", &m.token)
        .text_plain("Expiration", &date(millis(m.claims.expires_at)))
        .end();
    x.start("AssumedRoleUser")
        .text(
            "AssumedRoleId",
            &format!("{}:{}", m.claims.role_id, m.claims.role_session_name),
        )
        .text("Arn", &m.claims.assumed_role_arn)
        .end();
}

/// The JWKS for a provider: podiam's own issuer from memory, a static JWKS given at creation,
/// or the issuer's published keys.
async fn provider_jwks(
    ctx: &Ctx<'_>,
    provider: &OidcProvider,
) -> Result<std::sync::Arc<podiam_identity::Jwks>, AwsError> {
    if ctx.shared.is_own_issuer(&provider.url) {
        return Ok(ctx.shared.keys().jwks.clone());
    }
    if let Some(j) = &provider.static_jwks {
        return ctx.shared.static_jwks(j);
    }
    ctx.shared.remote_jwks(&provider.url, false).await
}

async fn assume_role_with_web_identity(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let role_arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    session_name_rule(session_name)?;
    let token = p.required("WebIdentityToken")?;
    if token.len() < 4 || token.len() > MAX_WEB_IDENTITY_TOKEN {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between 4 and {MAX_WEB_IDENTITY_TOKEN}"
        )));
    }
    let action = "sts:AssumeRoleWithWebIdentity";
    let mut event = Event::new(ctx, "AssumeRoleWithWebIdentity");
    event.role = Some(role_arn.to_string());
    event.session_name = Some(session_name.to_string());
    let result = async {
        // A pod's SDK presents the same projected token on every refresh: a token verified
        // before skips parsing and the signature check (if its key set is still current).
        let fingerprint = crate::tokens::fingerprint(token);
        let cached = ctx.shared.verified_tokens.get(&fingerprint);
        let unverified = match &cached {
            Some(_) => None,
            None => Some(
                UnverifiedJwt::parse_with_max_len(token, MAX_WEB_IDENTITY_TOKEN)
                    .map_err(|e| jwt_error(&e))?,
            ),
        };
        let iss = match (&cached, &unverified) {
            (Some(hit), _) => hit.claims.issuer(),
            (None, Some(u)) => u.unverified_claims().issuer(),
            (None, None) => None,
        }
        .ok_or_else(|| invalid_identity_token("The token has no `iss` claim"))?
        .to_string();
        event.issuer = Some(iss.clone());
        event.subject = match (&cached, &unverified) {
            (Some(hit), _) => hit.claims.subject(),
            (None, Some(u)) => u.unverified_claims().subject(),
            (None, None) => None,
        }
        .map(str::to_string);
        let state = ctx.shared.snapshot();
        let id = provider_key(&iss)
            .ok_or_else(|| invalid_identity_token(format!("Issuer `{iss}` is not a URL")))?;
        let provider = state
            .oidc_providers
            .values()
            .find(|o| provider_key(&o.url) == Some(id))
            .ok_or_else(|| {
                invalid_identity_token(format!(
                    "No OpenIDConnect provider found in your account for {iss}"
                ))
            })?;
        let role = role_by_arn(&state, role_arn, action)?;
        let mut jwks = provider_jwks(ctx, provider).await?;
        let now_s = ctx.facts.now / 1000;
        let claims = match cached {
            // Verified before with these very keys: only the time and audience checks remain.
            Some(hit) if hit.is_current(&jwks) => {
                crate::tokens::recheck(&hit.claims, &provider.client_ids, now_s)
                    .map_err(|e| jwt_error(&e))?;
                hit.claims
            }
            _ => {
                let unverified = match unverified {
                    Some(u) => u,
                    None => UnverifiedJwt::parse_with_max_len(token, MAX_WEB_IDENTITY_TOKEN)
                        .map_err(|e| jwt_error(&e))?,
                };
                let validation = Validation::new(iss.clone(), provider.client_ids.iter().cloned());
                let verified = match unverified.verify(&jwks, &validation, &SystemClock) {
                    // AWS re-fetches the keys once when a token names a key it does not know
                    // (rotation).
                    Err(JwtError::UnknownKeyId { .. })
                        if provider.static_jwks.is_none()
                            && !ctx.shared.is_own_issuer(&provider.url) =>
                    {
                        jwks = ctx.shared.remote_jwks(&provider.url, true).await?;
                        UnverifiedJwt::parse_with_max_len(token, MAX_WEB_IDENTITY_TOKEN)
                            .and_then(|t| t.verify(&jwks, &validation, &SystemClock))
                    }
                    other => other,
                }
                .map_err(|e| jwt_error(&e))?;
                let claims = std::sync::Arc::new(verified.into_claims());
                ctx.shared.verified_tokens.put(
                    fingerprint,
                    &jwks,
                    std::sync::Arc::clone(&claims),
                    now_s,
                );
                claims
            }
        };
        let sub = claims.subject().unwrap_or_default().to_string();
        let aud = claims
            .audiences()
            .iter()
            .find(|a| provider.client_ids.contains(a))
            .cloned()
            .unwrap_or_default();
        if let Some(k) = claims.kubernetes().ok().flatten() {
            event.namespace = Some(k.namespace.clone());
            event.service_account = Some(k.serviceaccount.name.clone());
            event.pod = k.pod.as_ref().map(|p| p.name.clone());
        }
        event.token_age_seconds = claims.issued_at().map(|iat| ctx.facts.now / 1000 - iat);
        let tags_claim = claims.session_tags().map_err(|e| {
            invalid_identity_token(format!("The token's session tags are malformed: {e}"))
        })?;
        let source_identity = claims
            .source_identity()
            .map_err(|e| invalid_identity_token(e.to_string()))?
            .map(str::to_string);

        // The trust policy, with the provider's condition keys (`host/path:sub`, `:aud`, `:amr`).
        let mut context = Context::new();
        context.insert(&format!("{id}:sub"), sub.as_str());
        context.insert(&format!("{id}:aud"), aud.as_str());
        if let Some(amr) = claims.get("amr").and_then(|v| v.as_array()) {
            context.insert_list(&format!("{id}:amr"), amr.iter().filter_map(|v| v.as_str()));
        }
        context.insert("aws:FederatedProvider", provider.arn.as_str());
        context.insert("sts:RoleSessionName", session_name);
        context.insert(
            "aws:CurrentTime",
            podiam_policy::date::format_date(ctx.facts.now),
        );
        context.insert("aws:EpochTime", (ctx.facts.now / 1000).to_string());
        if let Some(ip) = &ctx.facts.source_ip {
            context.insert("aws:SourceIp", ip.as_str());
        }
        if let Some(si) = &source_identity {
            context.insert("aws:SourceIdentity", si.as_str());
            context.insert("sts:SourceIdentity", si.as_str());
        }
        let (tags, transitive) = match &tags_claim {
            Some(t) => (t.principal_tags.clone(), t.transitive_tag_keys.clone()),
            None => (Vec::new(), Vec::new()),
        };
        for (k, v) in &tags {
            context.insert(&format!("aws:RequestTag/{k}"), v.as_str());
        }
        if !tags.is_empty() {
            context.insert_list("aws:TagKeys", tags.iter().map(|(k, _)| k.as_str()));
            context.insert_list(
                "sts:TransitiveTagKeys",
                transitive.iter().map(String::as_str),
            );
        }
        let trust = ctx.shared.compiled(
            &role.assume_role_policy_document,
            PolicyKind::Trust,
            "trust policy",
        )?;
        let principal = RequestPrincipal::federated(provider.arn.as_str());
        let mut actions = vec![action];
        if !tags.is_empty() {
            actions.push("sts:TagSession");
        }
        for a in actions {
            check_trust(
                ctx,
                &trust,
                &principal,
                a,
                role,
                &context,
                &PolicySet::default(),
                &mut event,
            )?;
        }

        let duration = session_duration(
            p.int("DurationSeconds")?
                .map(|d| u64::try_from(d).unwrap_or(0)),
            Duration::from_secs(u64::from(role.max_session_duration)),
            false,
        )
        .map_err(duration_error)?;
        let policies = session_policies(ctx, &state, p)?;
        let minted = mint(
            ctx,
            NewSession {
                role,
                session_name,
                duration,
                tags: tags
                    .into_iter()
                    .map(|(key, value)| SessionTag { key, value })
                    .collect(),
                transitive,
                policies: &policies,
                source_identity: source_identity.clone(),
                source: SessionSource::WebIdentity {
                    issuer: iss.clone(),
                    subject: sub.clone(),
                    audience: aud.clone(),
                },
            },
        )?;
        let mut x = Xml::response("AssumeRoleWithWebIdentity", NS);
        x.text("SubjectFromWebIdentityToken", &sub)
            .text("Audience", &aud);
        credentials_xml(&mut x, &minted);
        x.num("PackedPolicySize", policies.packed_percent)
            .text("Provider", &iss)
            .opt("SourceIdentity", source_identity.as_deref());
        Ok(x.finish("AssumeRoleWithWebIdentity", ctx.request_id))
    }
    .await;
    event.finish(&result);
    ctx.audit.record(event);
    result
}

/// Evaluates the trust policy for one action; a denial names what failed.
#[expect(
    clippy::too_many_arguments,
    reason = "the trust decision needs the whole request"
)]
fn check_trust(
    ctx: &Ctx<'_>,
    trust: &Policy,
    principal: &RequestPrincipal,
    action: &str,
    role: &Role,
    context: &Context,
    caller: &PolicySet<'_>,
    event: &mut Event,
) -> Result<(), AwsError> {
    let request = Request {
        principal: Some(principal),
        action,
        resource: &role.arn,
        context,
    };
    let decision = evaluate_trust(&request, trust, caller);
    if decision.is_allowed() {
        return Ok(());
    }
    // Explain: re-run with the trace (denials only, off the success path).
    let set = PolicySet {
        resource: Some(trust),
        resource_required: true,
        ..*caller
    };
    let (_, trace) = evaluate_with_trace(&request, &set);
    let detail = crate::auth::explain(&decision, &trace)
        .unwrap_or_else(|| decision.reason.describe().to_string());
    event.reason = Some(detail.clone());
    let mut message = format!("Not authorized to perform {action}");
    if ctx.shared.config.explain_denials {
        message.push_str(&format!(" (podiam: {detail})"));
    }
    Err(AwsError::access_denied(message))
}

async fn assume_role(ctx: &Ctx<'_>, p: &Params) -> Result<String, AwsError> {
    let caller = ctx.signed_caller()?;
    let role_arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    session_name_rule(session_name)?;
    let action = "sts:AssumeRole";
    let mut event = Event::new(ctx, "AssumeRole");
    event.role = Some(role_arn.to_string());
    event.session_name = Some(session_name.to_string());
    event.subject = Some(caller.arn().to_string());
    let result = async {
        let state = ctx.shared.snapshot();
        let role = role_by_arn(&state, role_arn, action)?.clone();
        let mut tags: Vec<(String, String)> = p.tags("Tags")?;
        if tags.len() > 50 {
            return Err(AwsError::validation("At most 50 session tags may be passed."));
        }
        let mut transitive: Vec<String> = p.list("TransitiveTagKeys").into_iter().map(str::to_string).collect();
        let chained = matches!(caller, Caller::Session(_));
        // AWS: transitive tags of the calling session pass on and cannot be overridden.
        if let Caller::Session(s) = caller {
            for t in &s.session_tags {
                if s.transitive_tag_keys.iter().any(|k| k.eq_ignore_ascii_case(&t.key)) {
                    if tags.iter().any(|(k, _)| k.eq_ignore_ascii_case(&t.key)) {
                        return Err(AwsError::invalid_input(format!(
                            "The transitive session tag `{}` cannot be overridden in a chained session",
                            t.key
                        )));
                    }
                    tags.push((t.key.clone(), t.value.clone()));
                    transitive.push(t.key.clone());
                }
            }
        }
        let mut context = caller_context(&state, caller, &ctx.facts, &ctx.shared.config.account_id);
        context.insert("sts:RoleSessionName", session_name);
        if let Some(e) = p.get("ExternalId") {
            if !(2..=1224).contains(&e.len()) {
                return Err(AwsError::validation("ExternalId must be 2 to 1,224 characters."));
            }
            context.insert("sts:ExternalId", e);
        }
        let source_identity = p.get("SourceIdentity").map(str::to_string);
        if let Some(si) = &source_identity {
            context.insert("sts:SourceIdentity", si.as_str());
        }
        for (k, v) in &tags {
            context.insert(&format!("aws:RequestTag/{k}"), v.as_str());
        }
        if !tags.is_empty() {
            context.insert_list("aws:TagKeys", tags.iter().map(|(k, _)| k.as_str()));
            context.insert_list("sts:TransitiveTagKeys", transitive.iter().map(String::as_str));
        }
        let trust = ctx.shared.compiled(&role.assume_role_policy_document, PolicyKind::Trust, "trust policy")?;
        let principal = match caller {
            Caller::User(u) => RequestPrincipal::aws(u.arn.as_str()),
            Caller::Session(s) => RequestPrincipal::role_session(s.assumed_role_arn.as_str(), s.role_arn.as_str()),
        };
        let admin = matches!(caller, Caller::User(u) if u.admin);
        let policies = caller_policies(ctx.shared, &state, caller)?;
        let identity: Vec<&Policy> = policies.identity.iter().map(|p| &**p).collect();
        let session: Option<Vec<&Policy>> = policies.session.as_ref().map(|s| s.iter().map(|p| &**p).collect());
        let caller_set = PolicySet {
            identity: &identity,
            permissions_boundary: policies.boundary.as_deref(),
            session: session.as_deref(),
            resource: None,
            resource_required: false,
        };
        let mut actions = vec![action];
        if !tags.is_empty() {
            actions.push("sts:TagSession");
        }
        if source_identity.is_some() {
            actions.push("sts:SetSourceIdentity");
        }
        // The administrator acts as the account root: trust policies naming the account admit it.
        let admin_set = PolicySet::default();
        let admin_principal = RequestPrincipal::aws(format!(
            "arn:{}:iam::{}:root",
            ctx.shared.config.partition, ctx.shared.config.account_id
        ));
        for a in actions {
            if admin {
                check_trust(ctx, &trust, &admin_principal, a, &role, &context, &admin_set, &mut event)
                    .or_else(|_| check_trust(ctx, &trust, &principal, a, &role, &context, &caller_set, &mut event))?;
            } else {
                check_trust(ctx, &trust, &principal, a, &role, &context, &caller_set, &mut event)?;
            }
        }
        let duration = session_duration(
            p.int("DurationSeconds")?.map(|d| u64::try_from(d).unwrap_or(0)),
            Duration::from_secs(u64::from(role.max_session_duration)),
            chained,
        )
        .map_err(duration_error)?;
        let policies = session_policies(ctx, &state, p)?;
        let minted = mint(
            ctx,
            NewSession {
                role: &role,
                session_name,
                duration,
                tags: tags.into_iter().map(|(key, value)| SessionTag { key, value }).collect(),
                transitive,
                policies: &policies,
                source_identity: source_identity.clone(),
                source: SessionSource::AssumeRole {
                    caller_arn: caller.arn().to_string(),
                },
            },
        )?;
        let mut x = Xml::response("AssumeRole", NS);
        credentials_xml(&mut x, &minted);
        x.num("PackedPolicySize", policies.packed_percent)
            .opt("SourceIdentity", source_identity.as_deref());
        Ok(x.finish("AssumeRole", ctx.request_id))
    }
    .await;
    event.finish(&result);
    ctx.audit.record(event);
    result
}

/// AWS: works even when every policy denies it.
fn get_caller_identity(ctx: &Ctx<'_>) -> Result<String, AwsError> {
    let caller = ctx.signed_caller()?;
    let mut x = Xml::response("GetCallerIdentity", NS);
    x.text("Arn", caller.arn())
        .text("UserId", &caller.user_id())
        .text("Account", &ctx.shared.config.account_id);
    Ok(x.finish("GetCallerIdentity", ctx.request_id))
}

/// The clock STS uses; a seam for tests.
pub fn now() -> SystemTime {
    SystemClock.now()
}
