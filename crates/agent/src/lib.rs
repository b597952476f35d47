//! The podiam node agent.
//!
//! | module | does |
//! |---|---|
//! | [`cache`] | credentials per pod UID and for the node role; refresh ahead of expiry, rate-limited renewals, static stability |
//! | [`source`] | the [`CredentialSource`] trait the cache calls |
//! | [`http_source`] | [`HttpSource`]: EKS Auth and STS over HTTP, SigV4-signed with the agent's key |
//! | [`aws_chain`] | [`aws_chain::ChainKey`]: the agent's key from the AWS SDK's standard credential chain |
//! | [`token`] | the pod UID and `exp` read from a not-yet-verified token, and its hash |
//! | [`imds`] | IMDSv2 sessions, the instance metadata tree, the namespace allow-list |
//! | [`pod_watch`] | the allow-list's source IP → namespace map from a watch of the node's pods |
//! | [`server`] | listeners (container credentials, IMDS, probes and metrics) |
//! | [`manifests`] | the DaemonSet and friends for `podiam agent manifests` |
//! | [`testing`] | a fixed source and unsigned tokens for tests and benchmarks (trusts every token) |
//! | [`clock`] | [`AgentClock`]: tokio time plus a wall clock that follows it |

pub mod aws_chain;
pub mod cache;
pub mod clock;
pub mod http_source;
pub mod imds;
pub mod manifests;
pub mod metrics;
pub mod pod_watch;
pub mod server;
pub mod source;
pub mod testing;
pub mod token;
pub mod wire;

pub use cache::{CacheConfig, CacheError, CredentialCache};
pub use clock::AgentClock;
pub use http_source::HttpSource;
pub use source::{CredentialSource, Credentials, PodCredentials, SourceError};
