//! How a run reports: `[TAG] message` text lines or JSON objects on
//! stderr, and the progress bar on a terminal.

use super::*;

/// Write one event: `[TAG] message` as text, or a JSON object.
pub fn emit(
    log: &mut dyn Write,
    format: LogFormat,
    tag: &str,
    message: &str,
    fields: serde_json::Value,
) {
    match format {
        LogFormat::Text => {
            let _ = writeln!(log, "[{tag}] {message}");
        }
        LogFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("ts_ms".into(), now_ms().into());
            obj.insert("event".into(), tag.to_ascii_lowercase().into());
            obj.insert("message".into(), message.into());
            if let serde_json::Value::Object(extra) = fields {
                obj.extend(extra);
            }
            let _ = writeln!(log, "{}", serde_json::Value::Object(obj));
        }
    }
}

/// The one line a run that ends in an error prints: `elysiactl: …` as
/// text, a `fatal` event under `--log-format json` (every stderr line is
/// then JSON).
pub fn emit_fatal(log: &mut dyn Write, format: LogFormat, message: &str, exit_code: u8) {
    match format {
        LogFormat::Text => {
            let _ = writeln!(log, "elysiactl: {message}");
        }
        LogFormat::Json => emit(
            log,
            format,
            "FATAL",
            message,
            serde_json::json!({"exit_code": exit_code}),
        ),
    }
}
