//! How commands report what happens: each command's events are typed (an
//! enum that implements [`Event`]); a [`Reporter`] turns one into a text line
//! `[TAG] message` or one JSON object (`--log-format json`). The text and the
//! JSON of an event come from the same value, so they cannot drift.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Something a command reports. `Display` is the text message.
pub trait Event: std::fmt::Display {
    /// The tag of the text line (`PROCESSED`); lower-cased, the JSON `event`.
    fn tag(&self) -> &'static str;
    /// The JSON fields beside `ts_ms`, `event` and `message` (an object, or
    /// null for none).
    fn fields(&self) -> serde_json::Value;
}

/// The text line of an event, without its newline.
pub fn text_line(e: &dyn Event) -> String {
    format!("[{}] {e}", e.tag())
}

/// The JSON object of an event.
pub fn json_value(e: &dyn Event, ts_ms: u64) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("ts_ms".into(), ts_ms.into());
    obj.insert("event".into(), e.tag().to_ascii_lowercase().into());
    obj.insert("message".into(), e.to_string().into());
    if let serde_json::Value::Object(extra) = e.fields() {
        for (k, v) in extra {
            obj.entry(k).or_insert(v);
        }
    }
    serde_json::Value::Object(obj)
}

/// Write one event in `format`. A write that fails (a closed stderr) is
/// dropped: reporting never stops a run.
pub fn write(out: &mut dyn Write, format: LogFormat, e: &dyn Event) {
    let _ = match format {
        LogFormat::Text => writeln!(out, "{}", text_line(e)),
        LogFormat::Json => writeln!(out, "{}", json_value(e, now_ms())),
    };
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An event made on the spot: a tag, a message and fields (for the few
/// one-off lines that need no variant of their own).
pub struct Plain {
    pub tag: &'static str,
    pub message: String,
    pub fields: serde_json::Value,
}

impl std::fmt::Display for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Event for Plain {
    fn tag(&self) -> &'static str {
        self.tag
    }
    fn fields(&self) -> serde_json::Value {
        self.fields.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_come_from_one_event() {
        let e = Plain {
            tag: "PROCESSED",
            message: "Line 1-2: 2 success".into(),
            fields: serde_json::json!({"first_line": 1, "event": "ignored"}),
        };
        assert_eq!(text_line(&e), "[PROCESSED] Line 1-2: 2 success");
        let v = json_value(&e, 5);
        assert_eq!(v["event"], "processed");
        assert_eq!(v["message"], "Line 1-2: 2 success");
        assert_eq!(v["first_line"], 1);
        assert_eq!(v["ts_ms"], 5);
        let mut out = Vec::new();
        write(&mut out, LogFormat::Json, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(line.trim()).is_ok());
    }
}
