//! [`LogSink`]: the request log, one line per record, written a batch at a time.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use super::record::{json_ms, json_string, write_micros};
use super::{SinkFuture, UsageRecord, UsageSink};

/// How [`LogSink`] writes its lines (and the proxy its other log lines: `[log] format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default): the shape of `tracing-subscriber`'s text format,
    /// `TIME  INFO chatgate::usage: request request_id=… key_id=… …`.
    #[default]
    Text,
    /// One JSON object per line, the shape of `tracing-subscriber`'s JSON format:
    /// `{"timestamp":…,"level":"INFO","fields":{"message":"request",…},"target":"chatgate::usage"}`.
    Json,
}

/// The request log: one line per request, made from its [`UsageRecord`] — the same line as the
/// usage layer's `tracing` event (target `chatgate::usage`, message `request`), with the same
/// fields — written a batch at a time.
///
/// Formatting a line through a `tracing` subscriber costs the request about as much as all the
/// rest of its accounting; made from the records on the sink's task, a line costs a fraction
/// of that and a batch of them is handed to `write` at once. The time of a line is when its
/// response ended (to the millisecond). Strings made only of plain characters are written bare
/// in the text format, any other quoted and escaped, so a client's model name cannot forge a
/// line or a field.
///
/// ```
/// use std::io::Write;
/// use std::sync::Arc;
/// use chatgate::usage::{LogFormat, LogSink, UsageHandle};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = LogSink::new(LogFormat::Text, |lines: &mut Vec<u8>| {
///     let _ = std::io::stderr().write_all(lines);
/// });
/// let usage = UsageHandle::builder().sink(Arc::new(log)).build();
/// # usage.close().await;
/// # }
/// ```
pub struct LogSink {
    format: LogFormat,
    write: Box<WriteLines>,
    state: Mutex<State>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Where a batch of lines goes: it may take the bytes out of the vector (leaving it empty, or
/// an empty vector of its own in its place), so that the lines are not copied once more.
type WriteLines = dyn Fn(&mut Vec<u8>) + Send + Sync;

/// The lines of a batch, and the date and time of day of the last second written.
#[derive(Default)]
struct State {
    buf: Vec<u8>,
    second: Option<u64>,
    date_time: String,
}

impl LogSink {
    /// Lines in `format`, each batch's handed to `write` in one call. `write` may take the
    /// vector's bytes (by swapping it for an empty vector: the sink clears what it gets back).
    pub fn new(format: LogFormat, write: impl Fn(&mut Vec<u8>) + Send + Sync + 'static) -> Self {
        Self {
            format,
            write: Box::new(write),
            state: Mutex::default(),
        }
    }

    /// Appends `r`'s line (with its `\n`) to `out`.
    pub fn line(&self, r: &UsageRecord, out: &mut Vec<u8>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.line(self.format, r, out);
    }
}

impl State {
    fn line(&mut self, format: LogFormat, r: &UsageRecord, out: &mut Vec<u8>) {
        // `YYYY-MM-DDTHH:MM:SS.mmmZ`, the date and time made once a second.
        let (secs, ms) = (r.ended_at_ms / 1000, r.ended_at_ms % 1000);
        if self.second != Some(secs) {
            self.date_time = crate::auth::format_rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
            self.date_time.pop(); // its `Z`: the fraction goes before it
            self.second = Some(secs);
        }
        let mut n = itoa::Buffer::new();
        let mut time = |out: &mut Vec<u8>| {
            out.extend_from_slice(self.date_time.as_bytes());
            out.push(b'.');
            // 1000 + ms has four digits, the first dropped.
            out.extend_from_slice(&n.format(1000 + ms).as_bytes()[1..]);
            out.push(b'Z');
        };
        match format {
            LogFormat::Text => {
                time(out);
                out.extend_from_slice(b"  INFO chatgate::usage: request");
                fields::<Text>(r, out);
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                time(out);
                out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\"");
                fields::<Json>(r, out);
                out.extend_from_slice(b"},\"target\":\"chatgate::usage\"}");
            }
        }
        out.push(b'\n');
    }
}

/// How one format writes the fields' values, and each name with what goes before its value.
///
/// The fields are written one by one (not in a loop over names and values): each name is then
/// a copy of known length, which costs a line about half as much.
trait Format {
    const NAMES: [&'static [u8]; 13];
    fn str(out: &mut Vec<u8>, s: &str);
    fn ms(out: &mut Vec<u8>, ms: f64);
}

/// The text format.
struct Text;

/// The JSON format.
struct Json;

impl Format for Text {
    const NAMES: [&'static [u8]; 13] = [
        b" request_id=",
        b" key_id=",
        b" model=",
        b" routed_model=",
        b" status=",
        b" streamed=",
        b" input_tokens=",
        b" output_tokens=",
        b" estimated=",
        b" partial=",
        b" duration_ms=",
        b" ttft_ms=",
        b" error=",
    ];

    fn str(out: &mut Vec<u8>, s: &str) {
        if plain(s) {
            out.extend_from_slice(s.as_bytes());
        } else if s.is_empty() {
            out.extend_from_slice(b"\"\"");
        } else {
            // Quoted and escaped as Rust's `Debug` does (as `tracing` does).
            let mut quoted = String::new();
            let _ = write!(quoted, "{s:?}");
            out.extend_from_slice(quoted.as_bytes());
        }
    }

    fn ms(out: &mut Vec<u8>, ms: f64) {
        if ms.is_finite() && ms.abs() < 1e12 {
            // Milliseconds to the microsecond, with integer formatting.
            let micros = (ms.abs() * 1000.0 + 0.5) as u64;
            if ms < 0.0 && micros > 0 {
                out.push(b'-');
            }
            write_micros(out, micros, false);
        } else {
            let mut text = String::new();
            let _ = write!(text, "{ms}");
            out.extend_from_slice(text.as_bytes());
        }
    }
}

impl Format for Json {
    const NAMES: [&'static [u8]; 13] = [
        b",\"request_id\":",
        b",\"key_id\":",
        b",\"model\":",
        b",\"routed_model\":",
        b",\"status\":",
        b",\"streamed\":",
        b",\"input_tokens\":",
        b",\"output_tokens\":",
        b",\"estimated\":",
        b",\"partial\":",
        b",\"duration_ms\":",
        b",\"ttft_ms\":",
        b",\"error\":",
    ];

    fn str(out: &mut Vec<u8>, s: &str) {
        json_string(out, s);
    }

    fn ms(out: &mut Vec<u8>, ms: f64) {
        // As serde_json writes an `f64`.
        json_ms(out, ms);
    }
}

/// The bytes a string written bare in the text format may hold.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b'+' | b'=');
        b += 1;
    }
    t
};

/// Whether a string is written bare in the text format.
fn plain(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| PLAIN[usize::from(b)])
}

/// The fields of `r`'s line, in `F`'s format.
fn fields<F: Format>(r: &UsageRecord, out: &mut Vec<u8>) {
    let names = &F::NAMES;
    let mut n = itoa::Buffer::new();
    let flag = |b: bool| if b { &b"true"[..] } else { &b"false"[..] };
    out.extend_from_slice(names[0]);
    F::str(out, r.request_id.as_deref().unwrap_or(""));
    out.extend_from_slice(names[1]);
    F::str(out, r.key_id.as_deref().unwrap_or(""));
    out.extend_from_slice(names[2]);
    F::str(out, r.model.as_deref().unwrap_or(""));
    out.extend_from_slice(names[3]);
    F::str(out, r.routed_model.as_deref().unwrap_or(""));
    out.extend_from_slice(names[4]);
    out.extend_from_slice(n.format(r.status).as_bytes());
    out.extend_from_slice(names[5]);
    out.extend_from_slice(flag(r.streamed));
    out.extend_from_slice(names[6]);
    out.extend_from_slice(n.format(r.prompt_tokens).as_bytes());
    out.extend_from_slice(names[7]);
    out.extend_from_slice(n.format(r.completion_tokens).as_bytes());
    out.extend_from_slice(names[8]);
    out.extend_from_slice(flag(r.estimated));
    out.extend_from_slice(names[9]);
    out.extend_from_slice(flag(r.partial));
    out.extend_from_slice(names[10]);
    F::ms(out, r.duration_ms);
    out.extend_from_slice(names[11]);
    F::ms(out, r.ttft_ms.unwrap_or(-1.0));
    out.extend_from_slice(names[12]);
    F::str(out, r.error.as_deref().unwrap_or(""));
}

impl UsageSink for LogSink {
    /// Writes the lines of the records taken since the last write, and of `batch`.
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = std::mem::take(&mut state.buf);
        buf.reserve(batch.len() * 320);
        for r in batch {
            state.line(self.format, r, &mut buf);
        }
        if !buf.is_empty() {
            (self.write)(&mut buf);
        }
        buf.clear();
        state.buf = buf;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Writes the lines of the records taken since the last write.
    fn flush(&self) -> SinkFuture<'_> {
        self.write(&[])
    }

    fn takes_records(&self) -> bool {
        true
    }

    /// Formats the record's line, written at the next [`write`](UsageSink::write).
    fn take(&self, record: &UsageRecord) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = std::mem::take(&mut state.buf);
        state.line(self.format, record, &mut buf);
        state.buf = buf;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    fn record() -> UsageRecord {
        UsageRecord {
            request_id: Some("3f2a".into()),
            key_id: None,
            model: Some("evil\nINFO forged=1".into()),
            routed_model: Some("Qwen/Qwen2.5-7B-Instruct".into()),
            status: 200,
            streamed: true,
            prompt_tokens: 9,
            completion_tokens: 24,
            partial: true,
            duration_ms: 12.3456,
            ttft_ms: None,
            error: Some("client_closed".into()),
            // 2026-11-26T02:01:29.007Z
            ended_at_ms: 1_795_658_489_007,
            ..UsageRecord::default()
        }
    }

    fn lines(format: LogFormat, records: &[UsageRecord]) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let log = LogSink::new(format, move |b: &mut Vec<u8>| {
            sink.lock().unwrap().extend_from_slice(b);
        });
        drop(log.write(records));
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_text_line_has_every_field_and_cannot_be_forged() {
        let text = lines(LogFormat::Text, &[record(), record()]);
        let line = "2026-11-26T02:01:29.007Z  INFO chatgate::usage: request request_id=3f2a \
                    key_id=\"\" model=\"evil\\nINFO forged=1\" routed_model=Qwen/Qwen2.5-7B-Instruct \
                    status=200 streamed=true input_tokens=9 output_tokens=24 estimated=false \
                    partial=true duration_ms=12.346 ttft_ms=-1.000 error=client_closed\n";
        assert_eq!(text, format!("{line}{line}"));
    }

    #[test]
    fn lines_of_records_taken_are_written_at_the_next_write_or_flush() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let log = LogSink::new(LogFormat::Text, move |b: &mut Vec<u8>| {
            sink.lock().unwrap().extend_from_slice(b);
        });
        log.take(&record());
        log.take(&record());
        assert!(out.lock().unwrap().is_empty(), "taken, not yet written");
        drop(log.write(&[record()]));
        let three = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            three,
            lines(LogFormat::Text, &[record(), record(), record()])
        );
        log.take(&record());
        drop(log.flush());
        assert_eq!(out.lock().unwrap().len(), three.len() / 3 * 4);
        drop(log.write(&[]));
        assert_eq!(
            out.lock().unwrap().len(),
            three.len() / 3 * 4,
            "nothing new"
        );
    }

    #[test]
    fn a_json_line_is_what_tracing_subscriber_makes_of_the_request_event() {
        use tracing_subscriber::layer::SubscriberExt;
        let r = record();
        let ours: serde_json::Value =
            serde_json::from_str(lines(LogFormat::Json, std::slice::from_ref(&r)).trim_end())
                .unwrap();
        // The usage layer's own event, through tracing-subscriber's JSON format.
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || Writer(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            // Another test's thread may cache the event's interest as "never" while this
            // subscriber is being registered (a race in tracing's callsite cache): the cache is
            // rebuilt, and the event sent again (at most twice more) when nothing was written.
            for _ in 0..3 {
                tracing::callsite::rebuild_interest_cache();
                crate::usage::trace::record(&tracing::Span::none(), &r);
                if !out.lock().unwrap().is_empty() {
                    break;
                }
            }
        });
        let theirs = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let mut theirs: serde_json::Value = serde_json::from_str(theirs.trim_end()).unwrap();
        assert_eq!(ours["timestamp"], "2026-11-26T02:01:29.007Z");
        theirs["timestamp"] = ours["timestamp"].clone();
        assert_eq!(ours, theirs);
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// Not a test: a loop to count a line's and a JSONL record's instructions under callgrind
    /// (`cargo test --release --lib usage::log::cost -- --ignored`).
    #[test]
    #[ignore = "a measuring loop, run by hand"]
    fn format_lines() {
        let r = UsageRecord {
            request_id: Some("d5986fa5c8dc95c3e6228fb60f1cda13".into()),
            model: Some("mock".into()),
            routed_model: Some("mock".into()),
            response_model: Some("mock".into()),
            upstream: Some("127.0.0.1:18090".into()),
            status: 200,
            prompt_tokens: 9,
            completion_tokens: 24,
            total_tokens: 33,
            // Times are kept to the microsecond.
            duration_ms: 1.354,
            ttft_ms: Some(1.342),
            finish_reasons: vec!["stop".into()],
            started_at_ms: 1_795_658_489_007,
            ended_at_ms: 1_795_658_489_008,
            ..UsageRecord::default()
        };
        let log = LogSink::new(LogFormat::Text, |_: &mut Vec<u8>| {});
        let mut out = Vec::with_capacity(1024);
        for _ in 0..10_000 {
            out.clear();
            log.line(std::hint::black_box(&r), &mut out);
        }
        for _ in 0..10_000 {
            out.clear();
            std::hint::black_box(&r).write_json(&mut out);
        }
    }
}
