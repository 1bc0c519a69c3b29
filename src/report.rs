//! How commands report what happens: each command's events are typed (an
//! enum that implements [`Event`]); a [`Reporter`] turns one into a text line
//! `[TAG] message` or one JSON object (`--log-format json`). The text and the
//! JSON of an event come from the same value, so they cannot drift.

use std::io::Write;

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

use crate::util::now_ms;

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

/// A `Write` for code that writes `[TAG] message` lines (the `changes`
/// pipeline): as text they pass through; under JSON each line becomes the
/// event `{"event": "tag", "message": …}`, so every line of every command
/// is JSON there. A line without a tag is an `info` event.
pub struct Lines<'a> {
    out: &'a mut dyn Write,
    format: LogFormat,
    pending: Vec<u8>,
}

impl<'a> Lines<'a> {
    pub fn new(out: &'a mut dyn Write, format: LogFormat) -> Self {
        Lines {
            out,
            format,
            pending: Vec::new(),
        }
    }

    fn line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let (tag, message) = match text
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .filter(|(t, _)| {
                !t.is_empty() && t.bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
            }) {
            Some((t, m)) => (t.to_ascii_lowercase(), m.to_owned()),
            None => ("info".to_owned(), text.into_owned()),
        };
        let mut obj = serde_json::Map::new();
        obj.insert("ts_ms".into(), now_ms().into());
        obj.insert("event".into(), tag.into());
        obj.insert("message".into(), message.into());
        let _ = writeln!(self.out, "{}", serde_json::Value::Object(obj));
    }
}

impl Write for Lines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.format == LogFormat::Text {
            return self.out.write(buf);
        }
        self.pending.extend_from_slice(buf);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.line(&line[..line.len() - 1]);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.line(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_lines_become_json_events() {
        let mut out = Vec::new();
        {
            let mut l = Lines::new(&mut out, LogFormat::Json);
            write!(l, "[PULLED] a\n[EMPTY-ROOT] /r: none\nplain").unwrap();
        }
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["event"], "pulled");
        assert_eq!(lines[1]["event"], "empty-root");
        assert_eq!(lines[1]["message"], "/r: none");
        assert_eq!(lines[2]["event"], "info");
        let mut out = Vec::new();
        writeln!(Lines::new(&mut out, LogFormat::Text), "[PULLED] a").unwrap();
        assert_eq!(out, b"[PULLED] a\n");
    }

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
