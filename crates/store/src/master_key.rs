//! Sealing secrets at rest with a master key (AES-256-GCM). The additional data binds a sealed
//! document to its row (`kind/key`), so a sealed secret cannot be moved to another entity.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

const PREFIX: &str = "podiam-sealed:v1:";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key must be 32 bytes, raw or base64 ({got} bytes given)")]
    Length { got: usize },
    #[error("cannot read the master key file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the random number generator failed")]
    Random,
    #[error(
        "a sealed secret does not open with this master key (wrong key, or the data was altered)"
    )]
    Open,
    #[error("a sealed secret is malformed")]
    Malformed,
}

#[derive(Clone)]
pub struct MasterKey {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(crate) fn is_sealed(data: &str) -> bool {
    data.starts_with(PREFIX)
}

impl MasterKey {
    /// 32 raw bytes, or their base64 (a file made with `head -c32 /dev/urandom | base64`).
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, MasterKeyError> {
        let trimmed = std::str::from_utf8(bytes).map(str::trim).ok();
        let material = match trimmed.and_then(|t| b64().decode(t).ok()) {
            Some(decoded) if decoded.len() == 32 => decoded,
            _ if bytes.len() == 32 => bytes.to_vec(),
            Some(decoded) => return Err(MasterKeyError::Length { got: decoded.len() }),
            None => return Err(MasterKeyError::Length { got: bytes.len() }),
        };
        let key = UnboundKey::new(&AES_256_GCM, &material).map_err(|_| MasterKeyError::Length {
            got: material.len(),
        })?;
        Ok(MasterKey {
            key: std::sync::Arc::new(LessSafeKey::new(key)),
        })
    }

    pub fn from_file(path: &std::path::Path) -> Result<MasterKey, MasterKeyError> {
        let bytes = std::fs::read(path).map_err(|source| MasterKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        MasterKey::from_bytes(&bytes)
    }

    pub(crate) fn seal(&self, row: &str, plaintext: &str) -> Result<String, MasterKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| MasterKeyError::Random)?;
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(row.as_bytes()),
                &mut buf,
            )
            .map_err(|_| MasterKeyError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", b64().encode(out)))
    }

    pub(crate) fn open(&self, row: &str, sealed: &str) -> Result<String, MasterKeyError> {
        let raw = b64()
            .decode(
                sealed
                    .strip_prefix(PREFIX)
                    .ok_or(MasterKeyError::Malformed)?,
            )
            .map_err(|_| MasterKeyError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(MasterKeyError::Malformed);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| MasterKeyError::Malformed)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(row.as_bytes()), &mut buf)
            .map_err(|_| MasterKeyError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| MasterKeyError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bound_to_the_row() {
        let k = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let s = k.seal("access_key/AKIA1", "{\"secret\":1}").unwrap();
        assert!(is_sealed(&s));
        assert!(!s.contains("secret"));
        assert_eq!(k.open("access_key/AKIA1", &s).unwrap(), "{\"secret\":1}");
        assert!(
            k.open("access_key/AKIA2", &s).is_err(),
            "moved to another row"
        );
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("access_key/AKIA1", &s).is_err());
        let b64key = b64().encode([7u8; 32]);
        let same = MasterKey::from_bytes(format!("{b64key}\n").as_bytes()).unwrap();
        assert_eq!(same.open("access_key/AKIA1", &s).unwrap(), "{\"secret\":1}");
        assert!(MasterKey::from_bytes(b"short").is_err());
    }
}
