//! Connection limits shared by podiam's HTTP servers (the STS/IAM server, the node agent and the
//! admission webhook), so that a client that connects and then sends slowly, or not at all,
//! holds a connection for a bounded time and a flood of connections holds a bounded number.
//!
//! | limit | what it ends |
//! |---|---|
//! | [`ConnectionLimits::header_read_timeout`] | HTTP/1: a request whose headers are not all in by then (slowloris), and a keep-alive connection on which no next request starts (hyper arms the timer as soon as it waits for a request head) |
//! | [`ConnectionLimits::body_read_timeout`] | a request whose body is not all in by then, counted from the request's start ([`DeadlineBody`]): the read fails, the handler answers an error and the connection closes |
//! | [`ConnectionLimits::tls_handshake_timeout`] | a TLS handshake ([`handshake`]) |
//! | [`ConnectionLimits::keep_alive_timeout`] | HTTP/2: a connection whose peer does not answer a ping within it (pings every [`ConnectionLimits::keep_alive_interval`]) |
//! | [`ConnectionLimits::max_connections`] | connections over the bound: each waits [`ConnectionLimits::connection_wait`] for a slot ([`Gate::admit`]), then is closed |
//!
//! ```
//! # async fn demo(listener: tokio::net::TcpListener) {
//! let limits = podiam_net::ConnectionLimits::default();
//! let gate = limits.gate();
//! while let Ok((tcp, _peer)) = listener.accept().await {
//!     // Over the bound: waits briefly for a slot, else the connection is dropped (closed).
//!     let Some(slot) = gate.admit().await else { continue };
//!     let builder = limits.http();
//!     tokio::spawn(async move {
//!         let _slot = slot; // held until the connection ends
//!         # let _ = (builder, tcp);
//!         // builder.serve_connection(TokioIo::new(tcp), service).await
//!     });
//! }
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a server lets a client take, and how many connections it holds at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// HTTP/1: all of a request's headers within this, from when the server waits for it (so
    /// also the idle time allowed between keep-alive requests).
    pub header_read_timeout: Duration,
    /// A request's whole body within this, from when its headers were read.
    pub body_read_timeout: Duration,
    /// A TLS handshake within this.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2: how often to ping an otherwise idle peer.
    pub keep_alive_interval: Duration,
    /// HTTP/2: a ping unanswered for this long ends the connection.
    pub keep_alive_timeout: Duration,
    /// Connections served at once; past it, new ones wait for a slot.
    pub max_connections: usize,
    /// How long a connection over the bound waits for a slot before it is closed.
    pub connection_wait: Duration,
    /// HTTP/2: streams (requests) in flight per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    /// Generous for real clients (SDKs send a request in milliseconds), short enough that a
    /// slow client cannot hold a slot for long.
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            max_connections: 1024,
            connection_wait: Duration::from_secs(1),
            max_concurrent_streams: 128,
        }
    }
}

impl ConnectionLimits {
    /// An HTTP/1.1 and HTTP/2 connection builder with these timeouts.
    #[must_use]
    pub fn http(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(self.keep_alive_interval))
            .keep_alive_timeout(self.keep_alive_timeout)
            .max_concurrent_streams(self.max_concurrent_streams);
        builder
    }

    /// The bound on concurrent connections, to be shared by a server's listeners.
    #[must_use]
    pub fn gate(&self) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(self.max_connections.max(1))),
            limits: *self,
        }
    }

    /// `req` with its body bounded by [`ConnectionLimits::body_read_timeout`] from now.
    pub fn bound_body<B>(&self, req: hyper::Request<B>) -> hyper::Request<DeadlineBody<B>> {
        let deadline = self.body_read_timeout;
        req.map(|body| DeadlineBody::new(body, deadline))
    }
}

// === Gate ===

/// A bound on the connections served at once.
#[derive(Clone, Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    limits: ConnectionLimits,
}

/// A connection's slot; dropping it (when the connection ends) frees it.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Gate {
    /// A slot for one connection: at once if one is free, else the first freed within the
    /// wait; `None` when none is (the caller closes the connection).
    pub async fn admit(&self) -> Option<Slot> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(Slot(permit));
        }
        let wait = self.limits.connection_wait;
        match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Some(Slot(permit)),
            _ => {
                tracing::warn!(
                    "connection refused: every connection slot is in use (raise --max-connections if clients are real)"
                );
                None
            }
        }
    }

    /// The limits this gate was made from, for the connections it admits.
    #[must_use]
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Slots free now.
    #[must_use]
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

// === TLS ===

/// A TLS handshake bounded by `timeout`; `None` when it failed or took too long.
pub async fn handshake<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// A connection, in the clear or after its TLS handshake: one type for one `serve_connection`.
pub enum MaybeTls<IO> {
    /// Plain TCP.
    Plain(IO),
    /// After a TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<IO>>),
}

/// `io` as is without `tls`, else after a handshake bounded by the limits' TLS handshake
/// timeout; `None` when the handshake failed or took too long.
pub async fn accept<IO>(
    tls: Option<&tokio_rustls::TlsAcceptor>,
    io: IO,
    limits: &ConnectionLimits,
) -> Option<MaybeTls<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tls {
        None => Some(MaybeTls::Plain(io)),
        Some(acceptor) => handshake(acceptor, io, limits.tls_handshake_timeout)
            .await
            .map(|s| MaybeTls::Tls(Box::new(s))),
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

// === DeadlineBody ===

/// A request body that fails with [`BodyTimedOut`] once its deadline passes.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl<B> DeadlineBody<B> {
    /// `inner`, which must be read in full within `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

/// The body was not all received within the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body was not received within {:?}", self.0)
    }
}

impl std::error::Error for BodyTimedOut {}

/// The body's own error, or its deadline.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = B::Data;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
