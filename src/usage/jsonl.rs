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
    /// The lines' buffer, back from the blocking thread after each write to serve again.
    lines: Arc<Mutex<Vec<u8>>>,
    /// What the last line had that the next mostly repeats (see [`LineCache`]).
    names: Arc<Mutex<LineCache>>,
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
            lines: Arc::default(),
            names: Arc::default(),
        })
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
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
        // Serialised here, so only bytes cross to the blocking thread (not a copy of the batch).
        let spare = Arc::clone(&self.lines);
        let mut lines = std::mem::take(&mut *spare.lock().unwrap_or_else(PoisonError::into_inner));
        lines.clear();
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        for r in batch {
            r.write_json_cached(&mut lines, &mut names);
            lines.push(b'\n');
        }
        drop(names);
        self.blocking(move |o| {
            let written = o.write(&lines);
            *spare.lock().unwrap_or_else(PoisonError::into_inner) = lines;
            written
        })
    }

    fn flush(&self) -> SinkFuture<'_> {
        self.blocking(Open::flush)
    }

    fn reopen(&self) -> SinkFuture<'_> {
        self.blocking(Open::reopen)
    }
}
