//! One HTTP request sent with retries, for everything that reports a job to the outside
//! (callbacks, metrics, health pings): retried with exponential backoff on network errors, 408,
//! 429 and 5xx, the reason of a failure redacted.

use std::time::Duration;

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(8);

/// Sends the request `build` makes (again at each attempt, so it may sign it afresh) up to
/// `attempts` times; returns why it was not delivered.
pub async fn send_with_retries(
    what: &str,
    attempts: u32,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let (reason, retry) = match build().send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let s = r.status();
                let body = r.text().await.unwrap_or_default();
                let body: String = body.trim().chars().take(300).collect();
                let retry = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
                (format!("HTTP {s} {body}").trim().to_string(), retry)
            }
            Err(e) => (chain(&e), true),
        };
        last = crate::secret::redact(&reason);
        if !retry || attempt == attempts {
            break;
        }
        tracing::info!(attempt, "{what} failed ({last}); retrying in {delay:?}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
    Err(last)
}

/// An error with its causes ("error sending request: connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
