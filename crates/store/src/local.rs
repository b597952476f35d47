//! The data directory of a single-machine podiam (`podiam up`): SQLite, with its secrets sealed
//! by a master key kept next to it, and nothing in it readable by other local users.
//!
//! The directory is created 0700 and `podiam.db` 0600 before SQLite opens it (SQLite gives its
//! `-wal` and `-shm` files the database file's mode); a directory or database that group or
//! others can read is refused with the `chmod` that fixes it. The master key is 32 random bytes
//! in `master.key` (0600), made on first use; a database written before sealing existed is
//! sealed on open, and its freed pages are wiped, so a copy of `podiam.db` alone reveals no
//! secret.

use std::fs::OpenOptions;
use std::io::Write as _;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;

use crate::{MasterKey, Store, StoreError};

/// The database's file name in the data directory.
pub const DATABASE_FILE: &str = "podiam.db";
/// The master key's file name in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

fn io_error(path: &Path, doing: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::File {
        path: path.clone(),
        doing,
        source,
    }
}

/// Creates `dir` (and missing parents) accessible to its owner only. An existing directory is
/// made private when `adopt` (a first start: nothing secret is in it yet), and otherwise
/// refused if others can read it.
pub fn create_private_dir(dir: &Path, adopt: bool) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(dir)
        .map_err(io_error(dir, "creating the data directory"))?;
    // A directory of another owner is a volume the platform mounted for us (a Kubernetes
    // emptyDir is root's, mode 2777 with an fsGroup): we can neither tighten it nor is anyone
    // else in the container to read it. Every file in it is still ours, 0600, and checked;
    // the secrets in the database are sealed either way.
    if !owned_by_us(dir)? {
        return Ok(());
    }
    if adopt {
        make_private(dir, 0o700)?;
    }
    refuse_if_readable_by_others(dir, "700")
}

/// Whether this process's effective user owns `path`.
fn owned_by_us(path: &Path) -> Result<bool, StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let owner = std::fs::metadata(path)
            .map_err(io_error(path, "reading the owner of"))?
            .uid();
        Ok(owner == rustix::process::geteuid().as_raw())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(true)
    }
}

fn make_private(path: &Path, mode: u32) -> Result<(), StoreError> {
    #[cfg(unix)]
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(path, "restricting the permissions of"))?;
    let _ = (path, mode);
    Ok(())
}

/// Whether `dir` is a data directory podiam has not started in yet (no database in it).
#[must_use]
pub fn is_new(dir: &Path) -> bool {
    !dir.join(DATABASE_FILE).exists()
}

/// Refuses `path` when its group or others may read, write or enter it.
pub fn refuse_if_readable_by_others(path: &Path, fix_mode: &'static str) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(path)
            .map_err(io_error(path, "reading the permissions of"))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Exposed {
                path: path.display().to_string(),
                mode,
                fix_mode,
            });
        }
    }
    Ok(())
}

/// Creates `path` for its owner only if it does not exist (so that what opens it next, SQLite
/// or a log writer, keeps that mode); an existing one is made private when `adopt`, otherwise
/// refused if others can read it.
pub fn create_private_file(path: &Path, adopt: bool) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).map_err(io_error(path, "creating"))?;
    if adopt {
        make_private(path, 0o600)?;
    }
    refuse_if_readable_by_others(path, "600")
}

/// The data directory's master key: read from `master.key`, or made (32 random bytes, base64,
/// 0600) when there is none.
pub fn master_key(dir: &Path) -> Result<MasterKey, StoreError> {
    let path = dir.join(MASTER_KEY_FILE);
    if path.exists() {
        refuse_if_readable_by_others(&path, "600")?;
        return Ok(MasterKey::from_file(&path)?);
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| crate::MasterKeyError::Random)?;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut options = OpenOptions::new();
    // create_new: two processes starting at once must not each write a different key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(&path) {
        Ok(mut f) => {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io_error(&path, "writing"))?;
            MasterKey::from_bytes(text.as_bytes()).map_err(StoreError::from)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(MasterKey::from_file(&path)?),
        Err(e) => Err(io_error(&path, "creating")(e)),
    }
}

impl Store {
    /// The SQLite store of the data directory `dir`, created private if new, with its secrets
    /// sealed by the directory's master key (`explicit`, when the operator gave one, instead);
    /// secrets an older podiam left unsealed are sealed now.
    pub async fn open_local(dir: &Path, explicit: Option<MasterKey>) -> Result<Store, StoreError> {
        let adopt = is_new(dir);
        create_private_dir(dir, adopt)?;
        let db = dir.join(DATABASE_FILE);
        create_private_file(&db, adopt)?;
        let key = match explicit {
            Some(k) => k,
            None => master_key(dir)?,
        };
        let store = Store::open_sqlite(&db).await?.with_master_key(Some(key));
        store.seal_unsealed_secrets().await?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests;
