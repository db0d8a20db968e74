//! [`JsonlSink`]: records appended to a file, one JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::record::LineCache;
use super::{SinkError, SinkFuture, UsageRecord, UsageSink};

/// When the file is flushed to the operating system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// After every batch (default): a record is in the file about as soon as it is made.
    EveryBatch,
    /// When this long has passed since the last flush (checked at each batch), and on
    /// [`UsageHandle::flush`](super::UsageHandle::flush) / `close`.
    Interval(Duration),
}

#[derive(Debug)]
struct Open {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    last_flush: Instant,
    policy: FlushPolicy,
}

impl Open {
    fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BufWriter::with_capacity(64 * 1024, file))
    }

    fn writer(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.writer.is_none() {
            self.writer = Some(Self::open(&self.path)?);
        }
        Ok(self.writer.as_mut().expect("just opened"))
    }

    fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let due = match self.policy {
            FlushPolicy::EveryBatch => true,
            FlushPolicy::Interval(d) => self.last_flush.elapsed() >= d,
        };
        let writer = self.writer()?;
        if due {
            // Straight to the file after what the buffer holds: the batch is not copied into
            // the buffer first only to be written out at once.
            writer.flush()?;
            writer.get_mut().write_all(lines)?;
            self.last_flush = Instant::now();
        } else {
            writer.write_all(lines)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(w) = &mut self.writer {
            w.flush()?;
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.writer = Some(Self::open(&self.path)?);
        Ok(())
    }
}

/// Appends each record as one JSON line to a file (created if needed). The writes happen on a
/// blocking thread, off the runtime. [`reopen`](UsageSink::reopen) (the proxy calls it on
/// SIGHUP) reopens the path, so a log rotator can move the file away and signal.
#[derive(Clone, Debug)]
pub struct JsonlSink {
    open: Arc<Mutex<Open>>,
    /// The lines of the records taken since the last write.
    staged: Arc<Mutex<Staged>>,
    /// A lines' buffer, back from the blocking thread after each write to serve again.
    spare: Arc<Mutex<Vec<u8>>>,
}

/// Lines not yet handed to the file.
#[derive(Debug, Default)]
struct Staged {
    lines: Vec<u8>,
    /// What the last line had that the next mostly repeats (see [`LineCache`]).
    cache: LineCache,
}

impl Staged {
    fn add(&mut self, r: &UsageRecord) {
        r.write_json_cached(&mut self.lines, &mut self.cache);
        self.lines.push(b'\n');
    }
}

impl JsonlSink {
    /// Opens (or creates) `path` for appending.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: impl Into<PathBuf>, policy: FlushPolicy) -> std::io::Result<Self> {
        let path = path.into();
        let writer = Open::open(&path)?;
        Ok(Self {
            open: Arc::new(Mutex::new(Open {
                path,
                writer: Some(writer),
                last_flush: Instant::now(),
                policy,
            })),
            staged: Arc::default(),
            spare: Arc::default(),
        })
    }

    /// The lines taken so far and those of `batch`, with the buffer to return them to once
    /// written; `None` when there are none.
    #[allow(clippy::type_complexity)]
    fn hand_over(&self, batch: &[UsageRecord]) -> Option<(Vec<u8>, Arc<Mutex<Vec<u8>>>)> {
        // Serialised here, so only bytes cross to the blocking thread (not a copy of the batch).
        let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        for r in batch {
            staged.add(r);
        }
        if staged.lines.is_empty() {
            return None;
        }
        let spare = Arc::clone(&self.spare);
        let mut next = std::mem::take(&mut *spare.lock().unwrap_or_else(PoisonError::into_inner));
        next.clear();
        Some((std::mem::replace(&mut staged.lines, next), spare))
    }

    fn blocking<F>(&self, f: F) -> SinkFuture<'_>
    where
        F: FnOnce(&mut Open) -> std::io::Result<()> + Send + 'static,
    {
        let open = Arc::clone(&self.open);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut o = open.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mut o)
            })
            .await
            .map_err(|e| SinkError::new(format!("jsonl writer: {e}")))?
            .map_err(|e| SinkError::new(format!("jsonl: {e}")))
        })
    }
}

impl UsageSink for JsonlSink {
    /// Writes the lines of the records taken since the last write, and of `batch`.
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
        match self.hand_over(batch) {
            Some((lines, spare)) => self.blocking(move |o| {
                let written = o.write(&lines);
                *spare.lock().unwrap_or_else(PoisonError::into_inner) = lines;
                written
            }),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    fn takes_records(&self) -> bool {
        true
    }

    /// Formats the record's line, handed to the file at the next [`write`](UsageSink::write).
    fn take(&self, record: &UsageRecord) {
        self.staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(record);
    }

    /// Writes what was taken, and flushes.
    fn flush(&self) -> SinkFuture<'_> {
        let staged = self.hand_over(&[]);
        self.blocking(move |o| {
            if let Some((lines, _)) = staged {
                o.write(&lines)?;
            }
            o.flush()
        })
    }

    fn reopen(&self) -> SinkFuture<'_> {
        self.blocking(Open::reopen)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(status: u16, request_id: &str) -> UsageRecord {
        UsageRecord {
            request_id: Some(request_id.into()),
            model: Some("qwen".into()),
            status,
            finish_reasons: vec!["stop".into()],
            ..UsageRecord::default()
        }
    }

    fn lines(path: &std::path::Path) -> Vec<UsageRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn records_taken_are_written_at_the_next_write_or_flush_in_order() {
        let path =
            std::env::temp_dir().join(format!("chatgate-jsonl-take-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = JsonlSink::open(&path, FlushPolicy::EveryBatch).unwrap();
        let (a, b, c, d) = (
            record(200, "a"),
            record(429, "b"),
            record(200, "c"),
            record(502, "d"),
        );
        sink.take(&a);
        sink.take(&b);
        assert!(lines(&path).is_empty(), "taken, not yet written");
        sink.flush().await.unwrap();
        assert_eq!(lines(&path), [a.clone(), b.clone()]);
        // A write hands over what was taken, then its batch.
        sink.take(&c);
        sink.write(std::slice::from_ref(&d)).await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(lines(&path), [a, b, c, d]);
        // Nothing taken: nothing written.
        sink.write(&[]).await.unwrap();
        assert_eq!(lines(&path).len(), 4);
        let _ = std::fs::remove_file(&path);
    }
}
