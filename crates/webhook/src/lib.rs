//! podiam's admission webhook: gives pods AWS identities (IRSA and EKS Pod Identity) the way
//! amazon-eks-pod-identity-webhook does, without its ServiceAccount-cache race.
//!
//! - [`mutate`](mod@mutate): the pure core, `mutate(&Pod, &Identity, &Config) -> Vec<PatchOperation>`.
//! - [`identity`]: ServiceAccount annotations, the ConfigMap mapping and Pod Identity
//!   associations resolved into an [`Identity`] (pure).
//! - [`webhook`]: AdmissionReview in, AdmissionReview out, with the direct ServiceAccount lookup.
//! - [`server`], [`tls`], [`source`], [`metrics`]: HTTPS with certificate reload, the kube-rs
//!   watches, Prometheus.
//! - [`podiam`]: Pod Identity associations polled from podiam's EKS API.
//! - [`manifests`]: the Kubernetes objects to deploy it.

pub mod flags;
pub mod identity;
mod lock;
pub mod manifests;
pub mod metrics;
pub mod mutate;
pub mod podiam;
pub mod server;
pub mod source;
pub mod tls;
pub mod webhook;

pub use mutate::{Config, ContainerCredentialsConfig, Credentials, Identity, mutate};
