//! IAM OpenID Connect providers (a podiam extension: `Jwks` for issuers podiam cannot reach).

use podiam_store::{Change, OidcProvider, State};

use super::*;

// === OIDC providers ===

/// `https://host/path` → `host/path`, the form used in provider ARNs and condition keys.
pub fn provider_id(url: &str) -> Option<String> {
    provider_key(url).map(str::to_string)
}

/// [`provider_id`] borrowed from `url`.
pub fn provider_key(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    (!rest.is_empty() && !rest.contains(['?', '#', ' '])).then_some(rest)
}

pub(super) fn thumbprint_rule(t: &[&str]) -> Result<(), AwsError> {
    if t.len() > 5 {
        return Err(AwsError::limit_exceeded(
            "Cannot exceed quota for ThumbprintsPerOpenIdConnectProvider: 5",
        ));
    }
    if let Some(bad) = t
        .iter()
        .find(|t| t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(AwsError::validation(format!(
            "Thumbprint `{bad}` must be 40 hexadecimal characters."
        )));
    }
    Ok(())
}

pub(super) fn client_id_rule(ids: &[&str]) -> Result<(), AwsError> {
    if ids.len() > 100 {
        return Err(AwsError::limit_exceeded(
            "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: 100",
        ));
    }
    if let Some(bad) = ids.iter().find(|c| c.is_empty() || c.chars().count() > 255) {
        return Err(AwsError::validation(format!(
            "Client ID `{bad}` must be 1 to 255 characters."
        )));
    }
    Ok(())
}

/// `CreateOpenIDConnectProvider`'s input (with podiam's `Jwks`).
#[derive(Clone, Debug, Default)]
pub struct CreateOpenIdConnectProvider {
    pub url: String,
    pub client_ids: Vec<String>,
    pub thumbprints: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// podiam extension: the issuer's JWKS, for clusters whose issuer cannot be reached.
    pub jwks: Option<String>,
}

pub(super) async fn create_oidc_provider_query(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let input = CreateOpenIdConnectProvider {
        url: p.required("Url")?.to_string(),
        client_ids: p
            .list("ClientIDList")
            .into_iter()
            .map(str::to_string)
            .collect(),
        thumbprints: p
            .list("ThumbprintList")
            .into_iter()
            .map(str::to_string)
            .collect(),
        tags: p.tags("Tags")?,
        jwks: p.get("Jwks").map(str::to_string),
    };
    let created = create_oidc_provider(ctx, input).await?;
    let mut x = Xml::response("CreateOpenIDConnectProvider", NS);
    x.text("OpenIDConnectProviderArn", &created.arn);
    if !created.tags.is_empty() {
        tags_xml(&mut x, "Tags", &created.tags);
    }
    Ok(reply(ctx, "CreateOpenIDConnectProvider", x))
}

/// AWS's `CreateOpenIDConnectProvider`: at most 100 per account, one per URL.
pub(crate) async fn create_oidc_provider(
    ctx: &Ctx<'_>,
    input: CreateOpenIdConnectProvider,
) -> Result<OidcProvider, AwsError> {
    let url = input.url;
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Err(AwsError::validation(format!(
            "Url `{url}` must begin with https://"
        )));
    }
    let id = provider_id(&url)
        .ok_or_else(|| AwsError::validation(format!("Url `{url}` is not a valid issuer URL")))?;
    let client_ids: Vec<&str> = input.client_ids.iter().map(String::as_str).collect();
    client_id_rule(&client_ids)?;
    let thumbprints: Vec<&str> = input.thumbprints.iter().map(String::as_str).collect();
    thumbprint_rule(&thumbprints)?;
    let tags = tags_rule(&input.tags, 0)?;
    let input_tags = input.tags;
    let static_jwks = input.jwks;
    if let Some(j) = &static_jwks {
        crate::issuer::check_jwks(j)?;
    }
    let arn = ctx.iam_arn(&format!("oidc-provider/{id}"));
    let provider = OidcProvider {
        arn: arn.clone(),
        url,
        client_ids: client_ids.iter().map(|s| s.to_string()).collect(),
        thumbprints: thumbprints.iter().map(|s| s.to_string()).collect(),
        create_date: ctx.facts.now,
        tags,
        static_jwks,
    };
    ctx.shared
        .write(|state| {
            ctx.check_with(
                state,
                "iam:CreateOpenIDConnectProvider",
                &arn,
                &RequestKeys::tagging(&input_tags),
            )?;
            if state.oidc_providers.contains_key(&arn) {
                return Err(AwsError::already_exists(format!(
                    "Provider with url {} already exists.",
                    provider.url
                )));
            }
            if state.oidc_providers.len() >= 100 {
                return Err(AwsError::limit_exceeded(
                    "Cannot exceed quota for OpenIdConnectProvidersPerAccount: 100",
                ));
            }
            Ok((
                vec![Change::OidcProvider(arn.clone(), Some(provider.clone()))],
                provider.clone(),
            ))
        })
        .await
}

/// The provider `arn`, once the caller may perform `action` on it (its tags in the context):
/// authorised before the lookup, as every read and write is.
fn authorized_oidc<'s>(
    ctx: &Ctx<'_>,
    state: &'s State,
    arn: &str,
    action: &str,
) -> Result<&'s OidcProvider, AwsError> {
    let tags = state.oidc_providers.get(arn).map_or(&[][..], |o| &o.tags);
    ctx.check_with(state, action, arn, &RequestKeys::default().on_iam(tags))?;
    oidc(state, arn)
}

pub(super) fn oidc<'s>(state: &'s State, arn: &str) -> Result<&'s OidcProvider, AwsError> {
    state.oidc_providers.get(arn).ok_or_else(|| {
        AwsError::no_such_entity(format!("OpenIDConnect Provider not found for arn {arn}"))
    })
}

/// AWS's `GetOpenIDConnectProvider`.
pub(crate) fn get_oidc_provider(ctx: &Ctx<'_>, arn: &str) -> Result<OidcProvider, AwsError> {
    let state = ctx.shared.snapshot();
    let o = authorized_oidc(ctx, &state, arn, "iam:GetOpenIDConnectProvider")?;
    Ok(o.clone())
}

pub(super) fn get_oidc_provider_query(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<String, AwsError> {
    let o = &get_oidc_provider(ctx, p.required("OpenIDConnectProviderArn")?)?;
    let mut x = Xml::response("GetOpenIDConnectProvider", NS);
    // AWS returns the URL without its scheme.
    x.text("Url", &provider_id(&o.url).unwrap_or_default());
    x.start("ClientIDList");
    for c in &o.client_ids {
        x.text("member", c);
    }
    x.end().start("ThumbprintList");
    for t in &o.thumbprints {
        x.text("member", t);
    }
    x.end().text("CreateDate", &date(o.create_date));
    if !o.tags.is_empty() {
        tags_xml(&mut x, "Tags", &o.tags);
    }
    Ok(reply(ctx, "GetOpenIDConnectProvider", x))
}

pub(super) fn list_oidc_providers(ctx: &Ctx<'_>, _p: &Params<'_>) -> Result<String, AwsError> {
    let state = ctx.shared.snapshot();
    ctx.check(&state, "iam:ListOpenIDConnectProviders", "*")?;
    let mut x = Xml::response("ListOpenIDConnectProviders", NS);
    x.start("OpenIDConnectProviderList");
    for arn in state.oidc_providers.keys() {
        x.start("member").text("Arn", arn).end();
    }
    x.end();
    Ok(reply(ctx, "ListOpenIDConnectProviders", x))
}

pub(super) async fn delete_oidc_provider(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn")?.to_string();
    ctx.shared
        .write(|state| {
            authorized_oidc(ctx, state, &arn, "iam:DeleteOpenIDConnectProvider")?;
            Ok((vec![Change::OidcProvider(arn.clone(), None)], ()))
        })
        .await?;
    Ok(empty(ctx, "DeleteOpenIDConnectProvider"))
}

pub(super) async fn modify_oidc(
    ctx: &Ctx<'_>,
    arn: &str,
    action: &str,
    change: impl Fn(&mut OidcProvider) -> Result<(), AwsError>,
) -> Result<(), AwsError> {
    ctx.shared
        .write(|state| {
            let mut o = authorized_oidc(ctx, state, arn, action)?.clone();
            change(&mut o)?;
            Ok((vec![Change::OidcProvider(arn.to_string(), Some(o))], ()))
        })
        .await
}

pub(super) async fn oidc_client_id(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
    add: bool,
) -> Result<String, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn")?.to_string();
    let client = p.required("ClientID")?.to_string();
    client_id_rule(&[&client])?;
    let (op, action) = if add {
        (
            "AddClientIDToOpenIDConnectProvider",
            "iam:AddClientIDToOpenIDConnectProvider",
        )
    } else {
        (
            "RemoveClientIDFromOpenIDConnectProvider",
            "iam:RemoveClientIDFromOpenIDConnectProvider",
        )
    };
    modify_oidc(ctx, &arn, action, |o| {
        if add {
            if !o.client_ids.contains(&client) {
                let ids: Vec<&str> = o
                    .client_ids
                    .iter()
                    .map(String::as_str)
                    .chain([client.as_str()])
                    .collect();
                client_id_rule(&ids)?;
                o.client_ids.push(client.clone());
            }
        } else {
            o.client_ids.retain(|c| *c != client);
        }
        Ok(())
    })
    .await?;
    Ok(empty(ctx, op))
}

pub(super) async fn update_oidc_thumbprint(
    ctx: &Ctx<'_>,
    p: &Params<'_>,
) -> Result<String, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn")?.to_string();
    let list = p.list("ThumbprintList");
    thumbprint_rule(&list)?;
    let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    modify_oidc(
        ctx,
        &arn,
        "iam:UpdateOpenIDConnectProviderThumbprint",
        |o| {
            o.thumbprints = list.clone();
            Ok(())
        },
    )
    .await?;
    Ok(empty(ctx, "UpdateOpenIDConnectProviderThumbprint"))
}
