//! SIGTERM and SIGINT as a [`CancellationToken`]: servers stop accepting and drain, workers finish
//! the batch in hand.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
///
/// The handlers are installed before this returns, so a signal that arrives at any point after
/// it (say, just after a process printed that it has started) cancels the token instead of
/// killing the process with the signal's default action. Call it within a Tokio runtime.
pub fn on_signal() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown signal received; draining");
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race the handlers' early install closes: a SIGTERM that arrives before the task
    /// waiting for it has first run (here: before this single-threaded runtime ever yields).
    /// Installed inside that task, as they once were, the signal's default action killed the
    /// process instead.
    #[tokio::test(flavor = "current_thread")]
    async fn a_signal_right_after_install_cancels_instead_of_killing() {
        let token = on_signal();
        let pid = std::process::id().to_string();
        let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(kill.success());
        tokio::time::timeout(std::time::Duration::from_secs(30), token.cancelled())
            .await
            .expect("the token is cancelled");
    }
}
