//! One issuance path for STS (`AssumeRoleWithWebIdentity`, `AssumeRole`) and EKS Auth
//! (`AssumeRoleForPodIdentity`): a presented token becomes verified claims
//! ([`PresentedToken::verify`]: the issuer's keys, the verified-token cache, one refetch when the
//! token names a key the issuer has not published before), the role's trust policy decides
//! ([`check_trust`]), and a session is minted and sealed ([`mint`]).
//!
//! Both APIs call these same functions, so a rule fixed here (key rotation, the cache, the
//! explanation of a denial) holds for both.

use std::sync::Arc;
use std::time::Duration;

use podiam_identity::credentials::{assumed_role_arn, mint_temporary_credentials};
use podiam_identity::jwt::{Claims, JwtError, UnverifiedJwt};
use podiam_identity::session::{SessionSource, SessionTag};
use podiam_identity::{Jwks, PooledSystemRng, SessionClaims, Validation};
use podiam_policy::{
    Context, PolicyKind, PolicySet, Record, Request, RequestPrincipal, evaluate_recorded, trust_set,
};
use podiam_store::{Role, State};

use crate::audit::Event;
use crate::ctx::Ctx;
use crate::error::{AwsError, token_error};
use crate::tokens::{Verified, fingerprint, recheck};

/// AWS: WebIdentityToken is at most 20,000 characters; pod tokens are held to the same bound.
pub(crate) const MAX_TOKEN: usize = 20_000;

/// Which API a token was presented to: it decides the error codes of a bad token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenUse {
    /// STS `AssumeRoleWithWebIdentity`.
    WebIdentity,
    /// EKS Auth `AssumeRoleForPodIdentity`.
    PodIdentity,
}

/// Where a token's keys come from: the issuer URL its `iss` must be, and the JWKS given at
/// registration when the issuer is not reachable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenIssuer<'a> {
    pub(crate) url: &'a str,
    pub(crate) static_jwks: Option<&'a str>,
}

/// A token as presented: either remembered (its signature was verified before) or parsed, not
/// yet verified.
pub(crate) struct PresentedToken<'t> {
    raw: &'t str,
    fingerprint: [u8; 32],
    cached: Option<Verified>,
    unverified: Option<UnverifiedJwt<'t>>,
    token_use: TokenUse,
}

impl<'t> PresentedToken<'t> {
    /// A pod's SDK presents the same projected token on every refresh: a token verified before
    /// skips parsing here (and the signature check in [`PresentedToken::verify`], if its key set
    /// is still current).
    pub(crate) fn new(
        ctx: &Ctx<'_>,
        raw: &'t str,
        token_use: TokenUse,
    ) -> Result<PresentedToken<'t>, AwsError> {
        // A token file written with a trailing newline (`echo`, an editor) reaches us with it:
        // JWTs hold no whitespace, so it is not part of the token.
        let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        let fingerprint = fingerprint(raw);
        let cached = ctx.shared.verified_tokens.get(&fingerprint);
        let unverified = match &cached {
            Some(_) => None,
            None => Some(parse(raw, token_use)?),
        };
        Ok(PresentedToken {
            raw,
            fingerprint,
            cached,
            unverified,
            token_use,
        })
    }

    fn claims(&self) -> Option<&Claims> {
        match (&self.cached, &self.unverified) {
            (Some(hit), _) => Some(&hit.claims),
            (None, Some(u)) => Some(u.unverified_claims()),
            (None, None) => None,
        }
    }

    /// The `iss` claim: verified only if the token was remembered; use it to find the issuer,
    /// never to decide.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims().and_then(Claims::issuer)
    }

    /// The `sub` claim, with the same caveat as [`PresentedToken::issuer`].
    pub(crate) fn subject(&self) -> Option<&str> {
        self.claims().and_then(Claims::subject)
    }

    /// The claims, once the signature (with `issuer`'s keys), `iss`, `aud` ∈ `audiences` and the
    /// times are checked. AWS re-fetches a remote issuer's keys once when a token names a key
    /// it does not know (the issuer rotated): so does this, for STS and EKS Auth alike.
    pub(crate) async fn verify(
        self,
        ctx: &Ctx<'_>,
        issuer: TokenIssuer<'_>,
        audiences: &[String],
    ) -> Result<Arc<Claims>, AwsError> {
        let bad = |e: &JwtError| token_error(e, self.token_use == TokenUse::PodIdentity);
        let now_s = ctx.facts.now / 1000;
        let mut jwks = issuer_keys(ctx, issuer, false).await?;
        if let Some(hit) = &self.cached
            && hit.is_current(&jwks, ctx.now())
            && hit.claims.issuer() == Some(issuer.url)
        {
            // Verified before with these very keys: only the time and audience checks remain.
            recheck(&hit.claims, audiences, now_s).map_err(|e| bad(&e))?;
            return Ok(Arc::clone(&hit.claims));
        }
        let unverified = match self.unverified {
            Some(u) => u,
            None => parse(self.raw, self.token_use)?,
        };
        let validation = Validation::new(issuer.url, audiences.iter().cloned());
        let clock = ctx.clock();
        let remote = issuer.static_jwks.is_none() && !ctx.shared.is_own_issuer(issuer.url);
        let verified = match unverified.verify(&jwks, &validation, &clock) {
            Err(JwtError::UnknownKeyId { .. }) if remote => {
                jwks = issuer_keys(ctx, issuer, true).await?;
                UnverifiedJwt::parse_with_max_len(self.raw, MAX_TOKEN)
                    .and_then(|t| t.verify(&jwks, &validation, &clock))
            }
            other => other,
        }
        .map_err(|e| bad(&e))?;
        let key_not_after = verified.key_not_after();
        let claims = Arc::new(verified.into_claims());
        ctx.shared.verified_tokens.put(
            self.fingerprint,
            &jwks,
            key_not_after,
            Arc::clone(&claims),
            now_s,
        );
        Ok(claims)
    }
}

fn parse(raw: &str, token_use: TokenUse) -> Result<UnverifiedJwt<'_>, AwsError> {
    UnverifiedJwt::parse_with_max_len(raw, MAX_TOKEN)
        .map_err(|e| token_error(&e, token_use == TokenUse::PodIdentity))
}

/// The keys of an issuer: podiam's own from memory, a static JWKS given at registration, or the
/// issuer's published keys (cached; `refresh` asks for a refetch).
async fn issuer_keys(
    ctx: &Ctx<'_>,
    issuer: TokenIssuer<'_>,
    refresh: bool,
) -> Result<Arc<Jwks>, AwsError> {
    if ctx.shared.is_own_issuer(issuer.url) {
        return Ok(ctx.shared.keys().jwks.clone());
    }
    if let Some(j) = issuer.static_jwks {
        return ctx.shared.static_jwks(j);
    }
    ctx.shared.remote_jwks(issuer.url, refresh, ctx.now()).await
}

// === the trust policy ===

/// A role by its ARN; `None` when there is none (each API words that its own way).
pub(crate) fn role_by_arn<'s>(state: &'s State, arn: &str) -> Option<&'s Role> {
    // Roles are kept by lowercased name, the ARN's last component (after any path): one lookup,
    // not a scan of every role per request.
    let name = arn.rsplit_once('/')?.1;
    let role = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        state.roles.get(name.to_ascii_lowercase().as_str())
    } else {
        state.roles.get(name)
    };
    role.filter(|r| r.arn == arn)
}

/// The request keys AWS sets for session tags: `aws:RequestTag/…`, `aws:TagKeys`,
/// `sts:TransitiveTagKeys`.
pub(crate) fn insert_request_tags<'a>(
    context: &mut Context<'a>,
    tags: &'a [(String, String)],
    transitive: &'a [String],
) {
    for (k, v) in tags {
        context.insert(format!("aws:RequestTag/{k}"), v.as_str());
    }
    if !tags.is_empty() {
        context.insert_list("aws:TagKeys", tags.iter().map(|(k, _)| k.as_str()));
        context.insert_list(
            "sts:TransitiveTagKeys",
            transitive.iter().map(String::as_str),
        );
    }
}

/// How a trust denial is worded: STS's own sentence, or EKS Auth's, which says what a Pod
/// Identity role must trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrustWording {
    Sts,
    PodIdentity,
}

/// One trust decision: may `principal` perform each of `actions` on `role`?
pub(crate) struct TrustRequest<'a> {
    pub(crate) role: &'a Role,
    pub(crate) principal: &'a RequestPrincipal,
    pub(crate) actions: &'a [&'a str],
    pub(crate) context: &'a Context<'a>,
    /// The caller's own policies (role chaining, `AssumeRole`); empty for federated callers.
    pub(crate) caller: &'a PolicySet<'a>,
    pub(crate) wording: TrustWording,
}

/// Evaluates the role's trust policy for each action; a denial names what failed (in the audit
/// event always, in the message when the server explains denials).
pub(crate) fn check_trust(
    ctx: &Ctx<'_>,
    t: &TrustRequest<'_>,
    event: &mut Event,
) -> Result<(), AwsError> {
    let trust = ctx.shared.compiled(
        &t.role.assume_role_policy_document,
        PolicyKind::Trust,
        "trust policy",
    )?;
    for action in t.actions {
        let request = Request {
            principal: Some(t.principal),
            action,
            resource: &t.role.arn,
            context: t.context,
        };
        // One evaluation; its record (inline for a short trust policy) is turned into the
        // trace only on a denial, which always names its cause in the audit event.
        let set = trust_set(&trust, t.caller);
        let mut record = Record::default();
        let decision = evaluate_recorded(&request, &set, &mut record);
        if decision.is_allowed() {
            continue;
        }
        let trace = record.trace(&request, &set, &decision);
        let detail = crate::auth::explain(&decision, &trace)
            .unwrap_or_else(|| decision.reason.describe().to_string());
        let explain = ctx.shared.config.explain_denials;
        let message = match t.wording {
            TrustWording::Sts => {
                event.reason = Some(detail.clone());
                let mut m = format!("Not authorized to perform {action}");
                if explain {
                    m.push_str(&format!(" (podiam: {detail})"));
                }
                m
            }
            TrustWording::PodIdentity => {
                event.reason = Some(format!("{action}: {detail}"));
                let mut m = format!(
                    "The role {} trust policy does not allow {} to perform {action}",
                    t.role.arn, t.principal.id
                );
                if explain {
                    m.push_str(&format!(" (podiam: {detail}; Pod Identity roles trust `\"Service\": \"pods.eks.amazonaws.com\"` with `sts:AssumeRole` and `sts:TagSession`)"));
                }
                m
            }
        };
        return Err(AwsError::access_denied(message));
    }
    Ok(())
}

// === minting ===

/// `Policy` and `PolicyArns`: parsed, size-checked, and resolved against the account.
#[derive(Clone, Default)]
pub(crate) struct SessionPolicies {
    pub(crate) inline: Option<String>,
    pub(crate) arns: Vec<String>,
    /// Plain-text size against the 2,048 quota, as a percentage (PackedPolicySize).
    pub(crate) packed_percent: u32,
}

/// A session, minted and sealed.
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

/// Mints temporary credentials at the request's time and seals them into a session token.
pub(crate) fn mint(ctx: &Ctx<'_>, s: NewSession<'_>) -> Result<Minted, AwsError> {
    let now = ctx.now();
    // Key ID, secret and the token's nonce come from the thread's pool of system randomness
    // (one call into the CSPRNG per ~17 mints).
    let rng = PooledSystemRng;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_tags_become_the_keys_aws_sets() {
        let tags = [("team".into(), "a".into()), ("env".into(), "p".into())];
        let transitive = ["team".into()];
        let mut c = Context::new();
        insert_request_tags(&mut c, &tags, &transitive);
        assert_eq!(
            c.get("aws:RequestTag/team").map(|v| v.values.to_strings()),
            Some(vec!["a".to_string()])
        );
        assert_eq!(
            c.get("aws:TagKeys").map(|v| v.values.to_strings()),
            Some(vec!["team".to_string(), "env".to_string()])
        );
        let mut empty = Context::new();
        insert_request_tags(&mut empty, &[], &[]);
        assert!(empty.get("aws:TagKeys").is_none());
    }
}
