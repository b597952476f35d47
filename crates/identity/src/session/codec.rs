//! The sealed payload of a version 2 session token: [`SessionClaims`] in a fixed binary layout.
//!
//! Version 1 sealed the claims as JSON; its field names were a third of the token. This layout has
//! no names and no escaping, so a token is shorter (fewer bytes to encrypt, base64, send and
//! escape) and cheaper to open on every signed call. Version 1 tokens are still opened, so the
//! sessions issued before an upgrade stay valid until they expire.
//!
//! ```text
//! issued_at i64 | expires_at i64                       (seconds since the epoch, big-endian)
//! access_key_id | secret_access_key | account_id | assumed_role_arn | role_arn | role_id
//! | role_session_name                                  (strings: u16 length + UTF-8)
//! session_tags: u16 count, then key | value each
//! transitive_tag_keys: u16 count, then strings
//! session_policy: u8 (0 absent, 1 present) [+ string]
//! session_policy_arns: u16 count, then strings
//! source_identity: u8 [+ string]
//! source: u8 kind (1 web identity, 2 pod identity, 3 assume role, 4 web identity of a token
//!         bound to a node) + its strings in field order
//! ```
//!
//! Decoding is strict: every length is checked against what is left, and trailing bytes are an
//! error. The payload is authenticated before it is decoded, so only podiam's own encoder ever
//! produces input that decodes.

use std::time::SystemTime;

use crate::clock::{from_unix_seconds, unix_seconds};
use crate::credentials::{AccessKeyId, SecretAccessKey};

use super::{SessionClaims, SessionSource, SessionTag};

const WEB_IDENTITY: u8 = 1;
const POD_IDENTITY: u8 = 2;
const ASSUME_ROLE: u8 = 3;
/// Kind 1 and the node's name: tokens of kind 1 (issued before nodes were recorded) still open.
const WEB_IDENTITY_ON_NODE: u8 = 4;

/// A value too long for its length prefix (a string over 65,535 bytes, or as many list items).
#[derive(Debug)]
pub(crate) struct TooLong(pub(crate) &'static str);

#[cfg(test)]
pub(crate) fn encode(c: &SessionClaims) -> Result<Vec<u8>, TooLong> {
    let mut out = Vec::with_capacity(512);
    encode_into(c, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `c` to `out` (the sealer writes it after the token's header and
/// nonce and encrypts it in place: one buffer per token).
pub(crate) fn encode_into(c: &SessionClaims, out: &mut Vec<u8>) -> Result<(), TooLong> {
    let mut w = Writer(out);
    w.time(c.issued_at);
    w.time(c.expires_at);
    w.str(c.access_key_id.as_str(), "access_key_id")?;
    w.str(c.secret_access_key.expose_secret(), "secret_access_key")?;
    w.str(&c.account_id, "account_id")?;
    w.str(&c.assumed_role_arn, "assumed_role_arn")?;
    w.str(&c.role_arn, "role_arn")?;
    w.str(&c.role_id, "role_id")?;
    w.str(&c.role_session_name, "role_session_name")?;
    w.len(c.session_tags.len(), "session_tags")?;
    for t in &c.session_tags {
        w.str(&t.key, "session tag key")?;
        w.str(&t.value, "session tag value")?;
    }
    w.strs(&c.transitive_tag_keys, "transitive_tag_keys")?;
    w.opt(c.session_policy.as_deref(), "session_policy")?;
    w.strs(&c.session_policy_arns, "session_policy_arns")?;
    w.opt(c.source_identity.as_deref(), "source_identity")?;
    match &c.source {
        SessionSource::WebIdentity {
            issuer,
            subject,
            audience,
            node_name,
        } => {
            w.0.push(if node_name.is_some() {
                WEB_IDENTITY_ON_NODE
            } else {
                WEB_IDENTITY
            });
            for s in [issuer, subject, audience] {
                w.str(s, "web identity source")?;
            }
            if let Some(node) = node_name {
                w.str(node, "web identity node")?;
            }
        }
        SessionSource::PodIdentity {
            cluster_name,
            namespace,
            service_account,
            pod_name,
            pod_uid,
        } => {
            w.0.push(POD_IDENTITY);
            for s in [cluster_name, namespace, service_account, pod_name, pod_uid] {
                w.str(s, "pod identity source")?;
            }
        }
        SessionSource::AssumeRole { caller_arn } => {
            w.0.push(ASSUME_ROLE);
            w.str(caller_arn, "caller_arn")?;
        }
    }
    Ok(())
}

/// Decodes a payload [`encode`] produced; the error names the field that did not decode.
pub(crate) fn decode(bytes: &[u8]) -> Result<SessionClaims, String> {
    let mut r = Reader(bytes);
    let issued_at = r.time("issued_at")?;
    let expires_at = r.time("expires_at")?;
    let access_key_id =
        AccessKeyId::parse(r.str("access_key_id")?).map_err(|e| format!("access_key_id: {e}"))?;
    let secret_access_key = SecretAccessKey::new(r.str("secret_access_key")?);
    let account_id = r.string("account_id")?;
    let assumed_role_arn = r.string("assumed_role_arn")?;
    let role_arn = r.string("role_arn")?;
    let role_id = r.string("role_id")?;
    let role_session_name = r.string("role_session_name")?;
    let tags = r.len("session_tags")?;
    let mut session_tags = Vec::with_capacity(tags.min(64));
    for _ in 0..tags {
        session_tags.push(SessionTag {
            key: r.string("session tag key")?,
            value: r.string("session tag value")?,
        });
    }
    let transitive_tag_keys = r.strings("transitive_tag_keys")?;
    let session_policy = r.opt("session_policy")?;
    let session_policy_arns = r.strings("session_policy_arns")?;
    let source_identity = r.opt("source_identity")?;
    let source = match r.byte("source")? {
        kind @ (WEB_IDENTITY | WEB_IDENTITY_ON_NODE) => SessionSource::WebIdentity {
            issuer: r.string("source issuer")?,
            subject: r.string("source subject")?,
            audience: r.string("source audience")?,
            node_name: if kind == WEB_IDENTITY_ON_NODE {
                Some(r.string("source node")?)
            } else {
                None
            },
        },
        POD_IDENTITY => SessionSource::PodIdentity {
            cluster_name: r.string("source cluster_name")?,
            namespace: r.string("source namespace")?,
            service_account: r.string("source service_account")?,
            pod_name: r.string("source pod_name")?,
            pod_uid: r.string("source pod_uid")?,
        },
        ASSUME_ROLE => SessionSource::AssumeRole {
            caller_arn: r.string("source caller_arn")?,
        },
        other => return Err(format!("source: unknown kind {other}")),
    };
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the claims", r.0.len()));
    }
    Ok(SessionClaims {
        access_key_id,
        secret_access_key,
        account_id,
        assumed_role_arn,
        role_arn,
        role_id,
        role_session_name,
        session_tags,
        transitive_tag_keys,
        session_policy,
        session_policy_arns,
        source_identity,
        issued_at,
        expires_at,
        source,
    })
}

struct Writer<'b>(&'b mut Vec<u8>);

impl Writer<'_> {
    fn time(&mut self, t: SystemTime) {
        self.0.extend_from_slice(&unix_seconds(t).to_be_bytes());
    }

    fn len(&mut self, n: usize, what: &'static str) -> Result<(), TooLong> {
        let n = u16::try_from(n).map_err(|_| TooLong(what))?;
        self.0.extend_from_slice(&n.to_be_bytes());
        Ok(())
    }

    fn str(&mut self, s: &str, what: &'static str) -> Result<(), TooLong> {
        self.len(s.len(), what)?;
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn strs(&mut self, items: &[String], what: &'static str) -> Result<(), TooLong> {
        self.len(items.len(), what)?;
        items.iter().try_for_each(|s| self.str(s, what))
    }

    fn opt(&mut self, s: Option<&str>, what: &'static str) -> Result<(), TooLong> {
        match s {
            None => {
                self.0.push(0);
                Ok(())
            }
            Some(s) => {
                self.0.push(1);
                self.str(s, what)
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("{what}: truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn time(&mut self, what: &str) -> Result<SystemTime, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(from_unix_seconds(i64::from_be_bytes(b)))
    }

    fn len(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let n = self.len(what)?;
        std::str::from_utf8(self.take(n, what)?).map_err(|_| format!("{what}: not UTF-8"))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        self.str(what).map(str::to_owned)
    }

    fn strings(&mut self, what: &str) -> Result<Vec<String>, String> {
        let n = self.len(what)?;
        let mut out = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            out.push(self.string(what)?);
        }
        Ok(out)
    }

    fn opt(&mut self, what: &str) -> Result<Option<String>, String> {
        match self.byte(what)? {
            0 => Ok(None),
            1 => self.string(what).map(Some),
            other => Err(format!("{what}: presence byte {other}")),
        }
    }
}
