//! Logs: human-readable by default, JSON (`LOG_FORMAT=json`) with the field names log platforms
//! map without configuration: `severity` and `message` (Cloud Logging's, also read by Datadog,
//! Elastic and Loki pipelines), `timestamp` (RFC 3339, UTC), and on every line the job's
//! `job_id`, `engine`, `operation` and current `phase`, next to the event's own fields (bytes,
//! duration_ms, peak_rss_bytes…).

use std::fmt;
use std::sync::{Mutex, OnceLock};

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
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
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine::default())
            .try_init()
    } else {
        builder.compact().try_init()
    };
    let _ = result;
}

/// The job's fields, for lines logged outside its span (threads and tasks started by the tools'
/// readers): set once the configuration is read.
static JOB_FIELDS: OnceLock<Map<String, Value>> = OnceLock::new();

/// Records the job's `job_id`, `engine` and `operation` for every later JSON line.
pub fn set_job_fields(job_id: &str, engine: &str, operation: &str) {
    let mut map = Map::new();
    map.insert("job_id".into(), job_id.into());
    map.insert("engine".into(), engine.into());
    map.insert("operation".into(), operation.into());
    let _ = JOB_FIELDS.set(map);
}

/// Cloud Logging's severity names for tracing's levels.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// One JSON object per line. The phase is the event's own `phase` field when it has one, else
/// the last phase logged, so every line of a job says where it was.
#[derive(Default)]
pub struct JsonLine {
    phase: Mutex<Option<String>>,
}

/// Before the first phase: reading the configuration.
const FIRST_PHASE: &str = "config";

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("severity".into(), severity(event.metadata().level()).into());
        if let Some(job) = JOB_FIELDS.get() {
            line.extend(job.clone());
        }
        // The job span's fields (job_id, engine, operation), formatted as JSON by `JsonFields`.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields.as_str()) {
                    line.extend(map);
                }
            }
        }
        let mut visitor = Fields(Map::new());
        event.record(&mut visitor);
        let mut fields = visitor.0;
        let phase = {
            let mut current = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Value::String(p)) = fields.get("phase") {
                *current = Some(p.clone());
            }
            current.clone().unwrap_or_else(|| FIRST_PHASE.into())
        };
        fields.insert("phase".into(), phase.into());
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        line.extend(fields);
        writeln!(writer, "{}", ordered(line).map_err(|_| fmt::Error)?)
    }
}

/// The fields a reader looks for first, in this order; the others follow by name.
const LEADING: [&str; 7] = [
    "timestamp",
    "severity",
    "message",
    "job_id",
    "engine",
    "operation",
    "phase",
];

fn ordered(mut line: Map<String, Value>) -> Result<String, serde_json::Error> {
    let mut text = String::from("{");
    let leading = LEADING
        .iter()
        .filter_map(|k| line.remove(*k).map(|v| (k.to_string(), v)))
        .collect::<Vec<_>>();
    for (i, (key, value)) in leading.into_iter().chain(line).enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(&key)?);
        text.push(':');
        text.push_str(&serde_json::to_string(&value)?);
    }
    text.push('}');
    Ok(text)
}

/// An event's fields as JSON values: numbers and booleans as such, the rest as strings.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(buffer: &Buffer) -> Vec<Value> {
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn json_lines_carry_the_fields_log_platforms_map() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("LOG_LEVEL is unusual");
            let span = tracing::info_span!(
                "job",
                job_id = "job-7",
                engine = "postgres",
                operation = "backup"
            );
            let _entered = span.enter();
            tracing::info!(phase = "start", "PostgreSQL backup started");
            tracing::info!(bytes = 1234u64, "uploaded \"part\" 1");
            tracing::error!(phase = "failed", exit_code = 6u8, "storage refused");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.lines()
                .all(|l| l.starts_with("{\"timestamp\":") && l.contains("\"severity\":")),
            "{text}"
        );
        let lines = lines(&buffer);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        for line in &lines {
            let ts = line["timestamp"].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
            assert!(line["message"].is_string(), "{line}");
        }
        assert_eq!(lines[0]["severity"], "WARNING");
        assert_eq!(lines[0]["phase"], "config");
        for line in &lines[1..] {
            assert_eq!(line["job_id"], "job-7");
            assert_eq!(line["engine"], "postgres");
            assert_eq!(line["operation"], "backup");
        }
        assert_eq!(lines[1]["severity"], "INFO");
        assert_eq!(lines[1]["phase"], "start");
        assert_eq!(lines[1]["message"], "PostgreSQL backup started");
        // A line without a phase is in the last one logged.
        assert_eq!(lines[2]["phase"], "start");
        assert_eq!(lines[2]["bytes"], 1234);
        assert_eq!(lines[2]["message"], "uploaded \"part\" 1");
        assert_eq!(lines[3]["severity"], "ERROR");
        assert_eq!(lines[3]["phase"], "failed");
        assert_eq!(lines[3]["exit_code"], 6);
    }
}
