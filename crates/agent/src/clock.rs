//! The agent's clock: monotonic time from tokio (virtual under `start_paused` tests) and a wall
//! clock that moves with it, so credential expirations (wall times from the server) and refresh
//! deadlines (monotonic) agree in tests without a single real sleep.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Time as the agent sees it. [`AgentClock::system`] reads the operating system's wall clock;
/// [`AgentClock::virtual_at`] derives the wall clock from tokio's (possibly paused) clock.
#[derive(Clone, Copy, Debug)]
pub struct AgentClock {
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    System,
    Virtual { wall: SystemTime, at: Instant },
}

impl AgentClock {
    /// The operating system's wall clock and tokio's monotonic clock.
    #[must_use]
    pub fn system() -> Self {
        Self { kind: Kind::System }
    }

    /// A wall clock that reads `wall` now and advances with tokio's clock (for tests on
    /// virtual time). Must be called inside a tokio runtime when time is paused.
    #[must_use]
    pub fn virtual_at(wall: SystemTime) -> Self {
        Self {
            kind: Kind::Virtual {
                wall,
                at: Instant::now(),
            },
        }
    }

    /// Monotonic now.
    #[must_use]
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock now.
    #[must_use]
    pub fn wall(&self) -> SystemTime {
        match self.kind {
            Kind::System => SystemTime::now(),
            Kind::Virtual { wall, at } => wall + Instant::now().saturating_duration_since(at),
        }
    }

    /// The monotonic instant at which the wall clock will read `wall` (now, if it already has).
    #[must_use]
    pub fn instant_at(&self, wall: SystemTime) -> Instant {
        let left = wall.duration_since(self.wall()).unwrap_or(Duration::ZERO);
        self.now() + left
    }
}

impl podiam_identity::Clock for AgentClock {
    fn now(&self) -> SystemTime {
        self.wall()
    }
}
