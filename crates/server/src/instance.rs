//! One server per data directory, and read-your-writes for the CLI.
//!
//! - `DIR/podiam.lock` is `flock`ed by the serving process for its whole life and says who it
//!   is (`{"pid":…,"endpoint":…}`). A second server on the directory is refused with those;
//!   the kernel releases the lock when the process dies, so a stale file is simply taken over.
//! - `DIR/podiam.sock` (a Unix socket, owner only) is how the CLI, having written the store
//!   directly, makes the running server catch up before it reports the write as done: it sends
//!   `sync`, the server reloads its state from the store and answers `ok`. Every request after
//!   that answer sees the write. The request path never reads the store for this: the cost is
//!   paid once per CLI write, not per request.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::state::Shared;

const LOCK_FILE: &str = "podiam.lock";
const SOCKET_FILE: &str = "podiam.sock";
/// How long the CLI waits for the server to confirm it has caught up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a client to say what it wants.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Sync connections served at once (each holds a reload of the state, which are serialised).
const MAX_CONNECTIONS: usize = 16;

/// Who holds a data directory's lock, as it wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// `http://127.0.0.1:7780`; absent while it is still starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another podiam (pid {pid}) already serves the data directory `{dir}`{at}: stop it first (`kill {pid}`), or give this one another --data-dir",
        pid = .holder.pid,
        at = .holder.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default()
    )]
    Held { dir: String, holder: Holder },
    #[error(
        "another process holds the lock `{path}` of this data directory: stop it first, or give this one another --data-dir"
    )]
    HeldUnknown { path: String },
    #[error("cannot lock the data directory with `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The lock on a data directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    file: std::fs::File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `dir` (created owner-only if missing), or says who has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(match read_holder(&mut file) {
                    Some(holder) => LockError::Held {
                        dir: dir.display().to_string(),
                        holder,
                    },
                    None => LockError::HeldUnknown {
                        path: path.display().to_string(),
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut lock = DataDirLock {
            file,
            path: path.clone(),
        };
        lock.write(&Holder {
            pid: std::process::id(),
            endpoint: None,
        })
        .map_err(io)?;
        Ok(lock)
    }

    /// Records the address this server answers on, for a second start's refusal.
    pub fn publish(&mut self, endpoint: &str) -> std::io::Result<()> {
        self.write(&Holder {
            pid: std::process::id(),
            endpoint: Some(endpoint.to_string()),
        })
    }

    fn write(&mut self, holder: &Holder) -> std::io::Result<()> {
        let text = serde_json::to_string(holder).map_err(std::io::Error::other)?;
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// What the lock file says, bounded (it is ours, but may be anything).
fn read_holder(file: &mut std::fs::File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(4_096).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The process serving `dir`, if one is (its lock is held).
pub fn holder(dir: &Path) -> Option<Holder> {
    let mut file = std::fs::File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => read_holder(&mut file),
    }
}

// === impl the sync socket ===

/// The server's end of `DIR/podiam.sock`; removed when dropped.
pub struct SyncSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SyncSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `sync` requests on `DIR/podiam.sock`. Call it while holding the directory's
/// [`DataDirLock`]: a socket file left by a dead server is replaced.
pub fn serve_sync(shared: Arc<Shared>, dir: &Path) -> std::io::Result<SyncSocket> {
    let path = dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sync socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                answer(&shared, stream).await;
                drop(permit);
            });
        }
    });
    Ok(SyncSocket { path, task })
}

/// One exchange: `sync\n` → the state reloaded from the store → `ok\n` (or `error …\n`).
async fn answer(shared: &Shared, mut stream: tokio::net::UnixStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = [0u8; 16];
    let mut len = 0;
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while len < request.len() && !request[..len].contains(&b'\n') {
            match stream.read(&mut request[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    })
    .await;
    let reply = if read.is_err() || &request[..len] != b"sync\n" {
        "error: expected `sync`\n".to_string()
    } else {
        match shared.refresh().await {
            Ok(_) => "ok\n".to_string(),
            Err(e) => {
                tracing::error!(error = %e.message, "cannot reload the state");
                format!(
                    "error: cannot reload the state: {}\n",
                    e.message.replace('\n', " ")
                )
            }
        }
    };
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// What [`sync`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Synced {
    /// No server serves the directory: the next one to start reads the store.
    NoServer,
    /// The running server has reloaded its state.
    Server,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the change is saved, but the podiam server serving `{dir}` did not confirm that it sees it ({why}); it will within a second"
)]
pub struct SyncError {
    pub dir: String,
    pub why: String,
}

/// Makes the server serving `dir`, if any, reload its state from the store, and waits until it
/// has: afterwards every request it answers sees what was written before this call.
pub async fn sync(dir: &Path) -> Result<Synced, SyncError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fail = |why: String| SyncError {
        dir: dir.display().to_string(),
        why,
    };
    let mut stream = match tokio::net::UnixStream::connect(dir.join(SOCKET_FILE)).await {
        Ok(s) => s,
        // No socket, or one left by a server that is gone; a path too long for a socket
        // (108 bytes) has none either (the server logged it).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::InvalidInput
            ) =>
        {
            return Ok(Synced::NoServer);
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let exchange = async {
        stream.write_all(b"sync\n").await?;
        let mut reply = Vec::new();
        (&mut stream).take(1_024).read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(SYNC_TIMEOUT, exchange).await {
        Err(_) => Err(fail(format!(
            "no answer within {} s",
            SYNC_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Ok(Ok(reply)) if reply == b"ok\n" => Ok(Synced::Server),
        Ok(Ok(reply)) => Err(fail(String::from_utf8_lossy(&reply).trim().to_string())),
    }
}
