//! TLS with certificates hot-reloaded from files.
//!
//! Kubernetes Secret volumes (cert-manager's) swap a `..data` symlink, so we poll the files'
//! contents instead of watching inotify events. A new pair that does not parse, or whose key does
//! not match the certificate, is refused and the old one keeps serving. Handshakes already under
//! way and open connections are not affected by a swap.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::lock::lock;

/// Errors loading or configuring TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("while reading `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file did not hold what we need.
    #[error("while parsing `{path}`: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The key is not usable or does not match the certificate.
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(rustls::Error),
    /// `--tls-min-version` was not one we know.
    #[error("unknown TLS version `{0}` (expected 1.2, 1.3, VersionTLS12 or VersionTLS13)")]
    Version(String),
    /// A `--tls-cipher-suites` name is not a suite we implement.
    #[error("unknown or unsupported cipher suite `{0}`")]
    CipherSuite(String),
    /// rustls refused the configuration.
    #[error("while building the TLS configuration: {0}")]
    Config(rustls::Error),
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Read and check a certificate chain and private key (PEM).
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
    let pem_err = |path: &Path, message: String| TlsError::Pem {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(cert_path, "no CERTIFICATE block".to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key_path, e.to_string()))?;
    let certified = CertifiedKey::from_der(certs, key, &provider()).map_err(TlsError::Pair)?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((certified, fingerprint))
}

/// A [`ResolvesServerCert`] whose certificate can be swapped while serving.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The cert+key bytes last loaded (or last refused), to skip unchanged files.
    last_seen: Mutex<Vec<u8>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// What one poll of the files found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    /// Same bytes as before.
    Unchanged,
    /// A new pair is now served.
    Reloaded,
    /// The files changed but the new pair is unusable; the old one is still served.
    Refused(String),
}

impl ReloadingCert {
    /// Load the pair once; fails if it is unusable (we cannot start without a certificate).
    pub fn new(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let (certified, seen) = load_pair(&cert_path, &key_path)?;
        Ok(Self {
            cert_path,
            key_path,
            current: ArcSwap::from_pointee(certified),
            last_seen: Mutex::new(seen),
        })
    }

    /// Re-read the files and swap the certificate if they changed and are usable.
    pub fn poll(&self) -> Reload {
        let read = |p: &Path| std::fs::read(p).ok();
        let (Some(mut seen), Some(key)) = (read(&self.cert_path), read(&self.key_path)) else {
            return Reload::Refused("certificate or key file unreadable".to_owned());
        };
        seen.extend_from_slice(&key);
        let mut last = lock(&self.last_seen);
        if *last == seen {
            return Reload::Unchanged;
        }
        // Remember refused contents too, so a bad pair is reported once, not every poll.
        *last = seen;
        match load_pair(&self.cert_path, &self.key_path) {
            Ok((certified, _)) => {
                self.current.store(Arc::new(certified));
                Reload::Reloaded
            }
            Err(e) => Reload::Refused(e.to_string()),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// `--tls-min-version`: `1.0|1.1|1.2|1.3` or Go's `VersionTLS1x`. rustls has no TLS 1.0/1.1, so
/// those mean 1.2 (which is what every kube-apiserver speaks anyway).
pub fn protocol_versions(
    min: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let all = vec![&rustls::version::TLS13, &rustls::version::TLS12];
    match min {
        "" | "1.0" | "1.1" | "1.2" | "VersionTLS10" | "VersionTLS11" | "VersionTLS12" => Ok(all),
        "1.3" | "VersionTLS13" => Ok(vec![&rustls::version::TLS13]),
        other => Err(TlsError::Version(other.to_owned())),
    }
}

/// The server configuration: `--tls-cipher-suites` takes Go's suite names (comma-separated) and,
/// as in Go, only restricts TLS 1.2; TLS 1.3 suites are always on.
pub fn server_config(
    resolver: Arc<ReloadingCert>,
    min_version: &str,
    cipher_suites: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut provider = provider();
    let wanted: Vec<&str> = cipher_suites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !wanted.is_empty() {
        for name in &wanted {
            let known = provider
                .cipher_suites
                .iter()
                .any(|s| format!("{:?}", s.suite()) == *name);
            if !known {
                return Err(TlsError::CipherSuite((*name).to_owned()));
            }
        }
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13
                || wanted.contains(&format!("{:?}", s.suite()).as_str())
        });
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&protocol_versions(min_version)?)
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
