//! Logs: human-readable by default, JSON (`LOG_FORMAT=json`) with fields a log platform can
//! index (job_id, engine, operation, phase, bytes, duration).

use tracing_subscriber::EnvFilter;

use crate::env::EnvReader;

/// Sets up logging from `LOG_FORMAT` and `LOG_LEVEL`. Problems are recorded with the rest of
/// the config; logging still starts (text, info) so they can be reported.
pub fn init(env: &mut EnvReader<'_>) {
    let json = env.choice("LOG_FORMAT", &["text", "json"]).as_deref() == Some("json");
    let level = env
        .choice("LOG_LEVEL", &["error", "warn", "info", "debug", "trace"])
        .unwrap_or_else(|| "info".into());
    // Dependencies stay at warn: their debug output can include request details.
    let filter = EnvFilter::new(format!("warn,runner_core={level},backup_runner={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    let _ = result;
}
