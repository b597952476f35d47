//! The STS API (awsQuery, Version 2011-06-15): AssumeRoleWithWebIdentity (unsigned: the JWT is
//! the credential), AssumeRole and GetCallerIdentity.

use std::time::Duration;

use podiam_identity::credentials::{DurationError, session_duration};
use podiam_identity::session::{SessionSource, SessionTag};
use podiam_policy::{Context, Policy, PolicyKind, PolicySet, RequestPrincipal};
use podiam_store::{Role, State};

use crate::audit::Event;
use crate::auth::{Caller, caller_context, caller_policies, millis};
use crate::ctx::Ctx;
use crate::error::{AwsError, Protocol};
use crate::iam::provider_key;
use crate::issuance::{
    MAX_TOKEN, Minted, NewSession, PresentedToken, SessionPolicies, TokenIssuer, TokenUse,
    TrustRequest, TrustWording, check_trust, insert_request_tags, mint,
};
use crate::query::Params;
use crate::xml::Xml;

mod broker;

pub(crate) const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

pub(crate) async fn handle(
    ctx: &Ctx<'_>,
    action: &str,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    match action {
        "AssumeRoleWithWebIdentity" => assume_role_with_web_identity(ctx, p).await,
        "AssumeRole" => assume_role(ctx, p).await,
        "GetCallerIdentity" => get_caller_identity(ctx),
        other => Err(AwsError::invalid_action("sts", other)),
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

/// AWS: SourceIdentity is 2–64 characters of `[\w+=,.@-]` and must not start with `aws:`.
fn source_identity_rule(si: &str) -> Result<(), AwsError> {
    let ok = (2..=64).contains(&si.chars().count())
        && si
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        && !si.to_ascii_lowercase().starts_with("aws:");
    if ok {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{si}' at 'sourceIdentity' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64"
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
    crate::issuance::role_by_arn(state, arn).ok_or_else(|| {
        AwsError::access_denied(format!("Not authorized to perform {action}: no role {arn}"))
    })
}

fn session_policies(
    ctx: &Ctx<'_>,
    state: &State,
    p: &Params<'_>,
) -> Result<SessionPolicies, AwsError> {
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
        return Err(AwsError::packed_too_large(format!(
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

/// The `Credentials` and `AssumedRoleUser` elements of a session, minted here or upstream.
pub(super) struct SessionXml<'a> {
    pub(super) access_key_id: &'a str,
    pub(super) secret_access_key: &'a str,
    pub(super) session_token: &'a str,
    pub(super) expiration: std::time::SystemTime,
    /// Its parts, one after the other (`role ID`, `:`, `session name`).
    pub(super) assumed_role_id: &'a [&'a str],
    pub(super) assumed_role_arn: &'a str,
}

pub(super) fn credentials_parts_xml(x: &mut Xml, s: &SessionXml<'_>) {
    x.start("Credentials")
        .text_plain("AccessKeyId", s.access_key_id)
        .text_plain("SecretAccessKey", s.secret_access_key)
        .text_plain("SessionToken", s.session_token)
        .date("Expiration", millis(s.expiration))
        .end();
    x.start("AssumedRoleUser")
        .text_joined("AssumedRoleId", s.assumed_role_id)
        .text("Arn", s.assumed_role_arn)
        .end();
}

fn credentials_xml(x: &mut Xml, m: &Minted) {
    credentials_parts_xml(
        x,
        &SessionXml {
            access_key_id: m.claims.access_key_id.as_str(),
            secret_access_key: m.claims.secret_access_key.expose_secret(),
            session_token: &m.token,
            expiration: m.claims.expires_at,
            assumed_role_id: &[&m.claims.role_id, ":", &m.claims.role_session_name],
            assumed_role_arn: &m.claims.assumed_role_arn,
        },
    );
}

async fn assume_role_with_web_identity(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let role_arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    session_name_rule(session_name)?;
    let token = p.required("WebIdentityToken")?;
    if token.len() < 4 || token.len() > MAX_TOKEN {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between 4 and {MAX_TOKEN}"
        )));
    }
    let action = "sts:AssumeRoleWithWebIdentity";
    let mut event = Event::new(ctx, "AssumeRoleWithWebIdentity");
    event.role = Some(role_arn.to_string());
    event.session_name = Some(session_name.to_string());
    // Until the token verifies, whatever it claims is unverified and the caller anonymous.
    event.unauthenticated = true;
    let result = async {
        let presented = PresentedToken::new(ctx, token, TokenUse::WebIdentity)?;
        let iss = presented
            .issuer()
            .ok_or_else(|| AwsError::invalid_identity_token("The token has no `iss` claim"))?
            .to_string();
        event.issuer = Some(iss.clone());
        event.subject = presented.subject().map(str::to_string);
        // Broker mode: another account's role, for a pod of a registered cluster.
        if crate::upstream::is_upstream_role(&ctx.shared.config, role_arn) {
            // Boxed: the upstream call's future is kilobytes (see `broker::pod_identity`).
            return Box::pin(broker::web_identity(ctx, p, presented, &iss, &mut event)).await;
        }
        let state = ctx.shared.snapshot();
        let id = provider_key(&iss).ok_or_else(|| {
            AwsError::invalid_identity_token(format!("Issuer `{iss}` is not a URL"))
        })?;
        let provider = state
            .oidc_providers
            .values()
            .find(|o| provider_key(&o.url) == Some(id))
            .ok_or_else(|| {
                AwsError::invalid_identity_token(format!(
                    "No OpenIDConnect provider found in your account for {iss}"
                ))
            })?;
        let role = role_by_arn(&state, role_arn, action)?;
        let claims = presented
            .verify(
                ctx,
                TokenIssuer {
                    url: &provider.url,
                    static_jwks: provider.static_jwks.as_deref(),
                },
                &provider.client_ids,
            )
            .await?;
        event.unauthenticated = false;
        let sub = claims.subject().unwrap_or_default().to_string();
        let aud = claims
            .audiences()
            .iter()
            .find(|a| provider.client_ids.contains(a))
            .cloned()
            .unwrap_or_default();
        let mut node_name = None;
        if let Some(k) = claims.kubernetes().ok().flatten() {
            // A pod's token on a node (the node agent's own): the session remembers the node, so
            // EKS Auth can bind the pod tokens this session exchanges to it.
            node_name =
                crate::eks_auth::token_node(&k).map_err(AwsError::invalid_identity_token)?;
            event.node.clone_from(&node_name);
            event.namespace = Some(k.namespace);
            event.service_account = Some(k.serviceaccount.name);
            event.pod = k.pod.map(|p| p.name);
        }
        event.token_age_seconds = claims.issued_at().map(|iat| ctx.facts.now / 1000 - iat);
        let tags_claim = claims.session_tags().map_err(|e| {
            AwsError::invalid_identity_token(format!("The token's session tags are malformed: {e}"))
        })?;
        let source_identity = claims
            .source_identity()
            .map_err(|e| AwsError::invalid_identity_token(e.to_string()))?
            .map(str::to_string);

        let (tags, transitive) = match &tags_claim {
            Some(t) => (t.principal_tags.clone(), t.transitive_tag_keys.clone()),
            None => (Vec::new(), Vec::new()),
        };
        // The trust policy, with the provider's condition keys (`host/path:sub`, `:aud`, `:amr`).
        // The context borrows the request's values; it ends before the session takes them.
        {
            // The keys below, and three per session tag.
            let mut context = Context::with_capacity(11 + 3 * tags.len());
            context.insert(format!("{id}:sub"), sub.as_str());
            context.insert(format!("{id}:aud"), aud.as_str());
            if let Some(amr) = claims.get("amr").and_then(|v| v.as_array()) {
                context.insert_list(format!("{id}:amr"), amr.iter().filter_map(|v| v.as_str()));
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
            insert_request_tags(&mut context, &tags, &transitive);
            let principal = RequestPrincipal::federated(provider.arn.as_str());
            let actions: &[&str] = if tags.is_empty() {
                &[action]
            } else {
                &[action, "sts:TagSession"]
            };
            check_trust(
                ctx,
                &TrustRequest {
                    role,
                    principal: &principal,
                    actions,
                    context: &context,
                    caller: &PolicySet::default(),
                    wording: TrustWording::Sts,
                },
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
        // The answer starts before the mint, so that the session can take `sub` and `aud`.
        let mut x = Xml::response("AssumeRoleWithWebIdentity", NS);
        x.text("SubjectFromWebIdentityToken", &sub)
            .text("Audience", &aud);
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
                    subject: sub,
                    audience: aud,
                    node_name,
                },
            },
        )?;
        credentials_xml(&mut x, &minted);
        x.num("PackedPolicySize", policies.packed_percent)
            .text("Provider", &iss)
            .opt("SourceIdentity", source_identity.as_deref());
        Ok(x.finish("AssumeRoleWithWebIdentity", ctx.request_id))
    }
    .await;
    event.finish(&result, Protocol::Query);
    ctx.audit.record(event);
    result
}

async fn assume_role(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
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
        let requested = p.get("SourceIdentity");
        if let Some(si) = requested {
            source_identity_rule(si)?;
        }
        // AWS: once set, the source identity is carried into every chained session and cannot
        // be changed; setting it (or carrying it) needs `sts:SetSourceIdentity` on the role.
        let inherited = match caller {
            Caller::Session(s) => s.source_identity.as_deref(),
            Caller::User(_) => None,
        };
        let source_identity = match (inherited, requested) {
            (Some(old), Some(new)) if old != new => {
                return Err(AwsError::access_denied(format!(
                    "Not authorized to perform sts:SetSourceIdentity: the calling session's source identity is `{old}` and cannot be changed to `{new}` in a chained session"
                )));
            }
            (Some(old), _) => Some(old.to_string()),
            (None, new) => new.map(str::to_string),
        };
        if let Some(si) = &source_identity {
            context.insert("sts:SourceIdentity", si.as_str());
        }
        insert_request_tags(&mut context, &tags, &transitive);
        let principal = match caller {
            Caller::User(u) => RequestPrincipal::aws(u.arn.as_str()),
            Caller::Session(s) => RequestPrincipal::role_session(s.assumed_role_arn.as_str(), s.role_arn.as_str()),
        };
        let admin = matches!(caller, Caller::User(u) if u.admin);
        let policies = caller_policies(ctx.shared, &state, caller)?;
        let mut actions = vec![action];
        if !tags.is_empty() {
            actions.push("sts:TagSession");
        }
        if source_identity.is_some() {
            actions.push("sts:SetSourceIdentity");
        }
        // The administrator acts as the account root: trust policies naming the account admit it.
        let admin_principal = RequestPrincipal::aws(format!(
            "arn:{}:iam::{}:root",
            ctx.shared.config.partition, ctx.shared.config.account_id
        ));
        policies.with_set(|caller_set| {
            for a in &actions {
                let as_caller = TrustRequest {
                    role: &role,
                    principal: &principal,
                    actions: std::slice::from_ref(a),
                    context: &context,
                    caller: caller_set,
                    wording: TrustWording::Sts,
                };
                if admin {
                    let as_root = TrustRequest {
                        principal: &admin_principal,
                        caller: &PolicySet::default(),
                        ..as_caller
                    };
                    check_trust(ctx, &as_root, &mut event)
                        .or_else(|_| check_trust(ctx, &as_caller, &mut event))?;
                } else {
                    check_trust(ctx, &as_caller, &mut event)?;
                }
            }
            Ok::<(), AwsError>(())
        })?;
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
    event.finish(&result, Protocol::Query);
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
