//! podiam's admission webhook: gives pods AWS identities (IRSA and EKS Pod Identity) the way
//! amazon-eks-pod-identity-webhook does, without its ServiceAccount-cache race.
//!
//! - [`mutate`]: the pure core, `mutate(&Pod, &Identity, &Config) -> Vec<PatchOperation>`.

pub mod mutate;

pub use mutate::{Config, ContainerCredentialsConfig, Credentials, Identity, mutate};
