//! The connection limits every podiam listener takes (`podiam up`, `podiam server`, `podiam
//! agent`, `podiam webhook`): how long a client may take to send a request, and how many
//! connections are served at once.

use std::time::Duration;

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct ConnectionArgs {
    /// Connections served at once; one more waits a second for a free slot, then is closed.
    #[arg(long, env = "PODIAM_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (HTTP/1; also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, env = "PODIAM_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// Seconds a client has to send a request's whole body, from its headers.
    #[arg(long, env = "PODIAM_BODY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub body_timeout_seconds: u64,
}

impl ConnectionArgs {
    pub fn limits(&self) -> podiam_net::ConnectionLimits {
        podiam_net::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_secs(self.header_timeout_seconds.max(1)),
            body_read_timeout: Duration::from_secs(self.body_timeout_seconds.max(1)),
            ..podiam_net::ConnectionLimits::default()
        }
    }
}
