//! [`UsageSink`] and [`UsageHandle`]: records leave the request path through a bounded channel
//! to a batch writer task, which hands each batch to every sink on the sink's own task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ByteEstimate, Prices, TokenCounter, UsageRecord};

/// What a sink's methods return.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A sink failed to take a batch (it keeps what it can and is asked again with the next one).
#[derive(Debug)]
pub struct SinkError(String);

impl SinkError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}

/// Where usage records go: an in-memory aggregate, a JSONL file, PostgreSQL, metrics, or yours.
///
/// Each sink runs on its own task and gets the records in batches, in order; a slow sink
/// delays only itself (until its queue of batches is full, then the writer waits for it).
pub trait UsageSink: fmt::Debug + Send + Sync + 'static {
    /// Takes a batch of records.
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a>;

    /// Makes what was written durable (called by [`UsageHandle::flush`]); default: nothing.
    fn flush(&self) -> SinkFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Reopens files (log rotation, [`UsageHandle::reopen`]); default: nothing.
    fn reopen(&self) -> SinkFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What to do with a record when the channel to the writer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop it and count it ([`UsageHandle::dropped`], and the metric
    /// `chatgate_usage_records_dropped_total`): requests never wait for accounting.
    #[default]
    Drop,
    /// Never drop: each request reserves its record's place in the channel before it is
    /// served ([`UsageLayer`](super::UsageLayer)'s `poll_ready`), so new requests wait while
    /// the channel is full.
    Wait,
}

// Boxed: a record is made in place and then moves as a pointer (into the channel, out of it,
// into the batch), not as a few hundred bytes each time, which costs more than its allocation.
pub(crate) enum Msg {
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
    Reopen,
    Close,
}

enum SinkMsg {
    // A `Vec`, not `[_]`: an `Arc<[_]>` would be a copy of every record of the batch.
    #[allow(clippy::rc_buffer)]
    Batch(Arc<Vec<UsageRecord>>),
    Flush(oneshot::Sender<()>),
    Reopen,
}

/// Counters of the handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) emitted: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) sink_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) overflow: Overflow,
    pub(crate) stats: Arc<Stats>,
    pub(crate) prices: ArcSwap<Prices>,
    pub(crate) counter: Arc<dyn TokenCounter>,
    closed: AtomicBool,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// Ends the writer's wait for a batch to fill: a full batch waits in the channel, or a
    /// flush, reopen or close was sent.
    wake: Arc<Notify>,
    /// Records waiting in the channel that end the writer's wait (a batch, or the channel's
    /// size if smaller).
    batch: usize,
}

/// The usage accounting's shared state: the channel to the sinks, the prices and the token
/// counter. Made **once** (it outlives stack reloads) and passed to every [`UsageLayer`](super::UsageLayer);
/// cheap to clone.
///
/// Call [`flush`](Self::flush) or [`close`](Self::close) after the server stops, so that every
/// record reaches its sinks.
#[derive(Clone)]
pub struct UsageHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for UsageHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageHandle")
            .field("overflow", &self.shared.overflow)
            .field("emitted", &self.emitted())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Builds a [`UsageHandle`].
#[derive(Debug)]
pub struct UsageHandleBuilder {
    sinks: Vec<Arc<dyn UsageSink>>,
    capacity: usize,
    batch: usize,
    linger: Duration,
    sink_queue: usize,
    overflow: Overflow,
    prices: Prices,
    counter: Arc<dyn TokenCounter>,
}

impl Default for UsageHandleBuilder {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            capacity: 8192,
            batch: 1024,
            linger: Duration::from_millis(250),
            sink_queue: 64,
            overflow: Overflow::Drop,
            prices: Prices::new(),
            counter: Arc::new(ByteEstimate),
        }
    }
}

impl UsageHandleBuilder {
    /// Adds a sink.
    pub fn sink(mut self, sink: Arc<dyn UsageSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Records the channel holds before [`Overflow`] applies (default 8192).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }

    /// How long the writer waits for a batch to fill once it has a record (default 250 ms;
    /// zero: records go to the sinks as soon as the writer runs).
    ///
    /// One batch costs each sink a wake-up and a write (a system call, for a file): gathering
    /// records for a while makes that cost per batch, not per request. The wait ends as soon as
    /// a full batch waits in the channel (so no rate can fill the channel during one wait), or
    /// [`flush`](UsageHandle::flush), [`reopen`](UsageHandle::reopen) or
    /// [`close`](UsageHandle::close) is called. Sinks, `/metrics` and `/v1/usage` see a record
    /// at most this long after its request ended (while the sinks keep up).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The most records in one batch (default 1024).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Batches queued for each sink before the writer waits for it (default 64).
    pub fn sink_queue(mut self, n: usize) -> Self {
        self.sink_queue = n.max(1);
        self
    }

    /// What happens when the channel is full (default [`Overflow::Drop`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Prices by model, for the records' `cost`.
    pub fn prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
    }

    /// The token counter for estimates (default [`ByteEstimate`]).
    pub fn counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = counter;
        self
    }

    /// The handle; spawns the writer task and one task per sink.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn build(self) -> UsageHandle {
        let (tx, rx) = mpsc::channel(self.capacity);
        let stats = Arc::new(Stats::default());
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        for sink in self.sinks {
            let (stx, srx) = mpsc::channel(self.sink_queue);
            sinks.push(stx);
            tasks.push(tokio::spawn(sink_task(sink, srx, Arc::clone(&stats))));
        }
        let wake = Arc::new(Notify::new());
        let dispatcher = tokio::spawn(dispatch(
            rx,
            sinks,
            tasks,
            self.batch,
            self.linger,
            Arc::clone(&wake),
        ));
        UsageHandle {
            shared: Arc::new(Shared {
                tx,
                overflow: self.overflow,
                stats,
                prices: ArcSwap::from_pointee(self.prices),
                counter: self.counter,
                closed: AtomicBool::new(false),
                dispatcher: Mutex::new(Some(dispatcher)),
                wake,
                batch: self.batch.min(self.capacity),
            }),
        }
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<Msg>,
    sinks: Vec<mpsc::Sender<SinkMsg>>,
    tasks: Vec<JoinHandle<()>>,
    batch: usize,
    linger: Duration,
    wake: Arc<Notify>,
) {
    let mut buf = Vec::with_capacity(batch);
    let mut batches = Batches::new(batch);
    'run: while rx.recv_many(&mut buf, batch).await > 0 {
        // A batch that is not full waits `linger` for more records (without a wake-up per
        // record): one wake-up and one write per sink per batch, not per request. The wait
        // ends early once a full batch waits in the channel (so a high rate cannot fill the
        // channel during one wait) or a flush, reopen or close comes; those do not wait.
        let records_only = buf.iter().all(|m| matches!(m, Msg::Record(_)));
        if buf.len() < batch && records_only && !linger.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = wake.notified() => {}
            }
            // What came meanwhile, taken at once (one release of the channel's places for all,
            // not one per record); never waits, as the channel is not empty.
            if buf.len() < batch && !rx.is_empty() {
                let room = batch - buf.len();
                rx.recv_many(&mut buf, room).await;
            }
        }
        for msg in buf.drain(..) {
            match msg {
                Msg::Record(r) => batches.records.push(*r),
                Msg::Flush(ack) => {
                    send_batch(&sinks, &mut batches).await;
                    flush_sinks(&sinks).await;
                    let _ = ack.send(());
                }
                Msg::Reopen => {
                    send_batch(&sinks, &mut batches).await;
                    for s in &sinks {
                        let _ = s.send(SinkMsg::Reopen).await;
                    }
                }
                Msg::Close => {
                    rx.close();
                    // What is still in the channel goes out first.
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Record(r) => batches.records.push(*r),
                            Msg::Flush(ack) => {
                                let _ = ack.send(());
                            }
                            Msg::Reopen | Msg::Close => {}
                        }
                    }
                    send_batch(&sinks, &mut batches).await;
                    flush_sinks(&sinks).await;
                    break 'run;
                }
            }
            if batches.records.len() >= batch {
                send_batch(&sinks, &mut batches).await;
            }
        }
        send_batch(&sinks, &mut batches).await;
    }
    drop(sinks);
    for t in tasks {
        let _ = t.await;
    }
}

/// The batches of the writer: the one being gathered, and the last one sent, whose vector is
/// used again once every sink is done with it (a batch's vector is large: made anew for every
/// batch, it would cost the allocator more than the rest of the batch's way).
struct Batches {
    records: Vec<UsageRecord>,
    last: Option<Arc<Vec<UsageRecord>>>,
}

impl Batches {
    fn new(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            last: None,
        }
    }

    /// The gathered batch, to send; gathering goes on in a vector of the same size.
    #[allow(clippy::rc_buffer)]
    fn take(&mut self) -> Arc<Vec<UsageRecord>> {
        let next = match self.last.take().map(Arc::try_unwrap) {
            Some(Ok(mut v)) => {
                v.clear();
                v
            }
            _ => Vec::with_capacity(self.records.capacity()),
        };
        let batch = Arc::new(std::mem::replace(&mut self.records, next));
        self.last = Some(Arc::clone(&batch));
        batch
    }
}

async fn send_batch(sinks: &[mpsc::Sender<SinkMsg>], batches: &mut Batches) {
    if batches.records.is_empty() {
        return;
    }
    let batch = batches.take();
    for s in sinks {
        let _ = s.send(SinkMsg::Batch(Arc::clone(&batch))).await;
    }
}

async fn flush_sinks(sinks: &[mpsc::Sender<SinkMsg>]) {
    let mut acks = Vec::with_capacity(sinks.len());
    for s in sinks {
        let (tx, rx) = oneshot::channel();
        if s.send(SinkMsg::Flush(tx)).await.is_ok() {
            acks.push(rx);
        }
    }
    for a in acks {
        let _ = a.await;
    }
}

async fn sink_task(sink: Arc<dyn UsageSink>, mut rx: mpsc::Receiver<SinkMsg>, stats: Arc<Stats>) {
    while let Some(msg) = rx.recv().await {
        let result = match msg {
            SinkMsg::Batch(batch) => sink.write(&batch).await,
            SinkMsg::Flush(ack) => {
                let r = sink.flush().await;
                let _ = ack.send(());
                r
            }
            SinkMsg::Reopen => sink.reopen().await,
        };
        if let Err(e) = result {
            stats.sink_errors.fetch_add(1, Relaxed);
            tracing::warn!(target: "chatgate::usage", sink = ?sink, error = %e, "usage sink failed");
        }
    }
    if let Err(e) = sink.flush().await {
        tracing::warn!(target: "chatgate::usage", sink = ?sink, error = %e, "usage sink failed to flush");
    }
}

impl UsageHandle {
    /// A builder: no sinks, [`Overflow::Drop`], capacity 8192.
    pub fn builder() -> UsageHandleBuilder {
        UsageHandleBuilder::default()
    }

    /// Records handed to the writer so far.
    pub fn emitted(&self) -> u64 {
        self.shared.stats.emitted.load(Relaxed)
    }

    /// Records dropped because the channel was full (or closed) so far.
    pub fn dropped(&self) -> u64 {
        self.shared.stats.dropped.load(Relaxed)
    }

    /// Sink failures so far (each is also logged).
    pub fn sink_errors(&self) -> u64 {
        self.shared.stats.sink_errors.load(Relaxed)
    }

    /// Replaces the prices (e.g. on a configuration reload).
    pub fn set_prices(&self, prices: Prices) {
        self.shared.prices.store(Arc::new(prices));
    }

    /// The current prices.
    pub fn prices(&self) -> Arc<Prices> {
        self.shared.prices.load_full()
    }

    /// The token counter for estimates.
    pub fn counter(&self) -> &Arc<dyn TokenCounter> {
        &self.shared.counter
    }

    /// What to do when the channel is full.
    pub fn overflow(&self) -> Overflow {
        self.shared.overflow
    }

    /// Waits until every record emitted before the call has been written by every sink, and
    /// the sinks flushed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Flush(tx)).await.is_ok() {
            self.shared.wake.notify_one();
            let _ = rx.await;
        }
    }

    /// Asks every sink to reopen its files (log rotation; the proxy does it on SIGHUP).
    pub async fn reopen(&self) {
        if self.shared.tx.send(Msg::Reopen).await.is_ok() {
            self.shared.wake.notify_one();
        }
    }

    /// Writes and flushes everything emitted so far, then stops the writer and the sinks'
    /// tasks; records emitted later are counted as dropped.
    pub async fn close(&self) {
        if self.shared.closed.swap(true, Relaxed) {
            return;
        }
        let _ = self.shared.tx.send(Msg::Close).await;
        self.shared.wake.notify_one();
        let task = self
            .shared
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Ends the writer's wait for a batch to fill when a full batch waits in the channel.
    fn nudge(&self) {
        let tx = &self.shared.tx;
        if tx.max_capacity() - tx.capacity() >= self.shared.batch {
            self.shared.wake.notify_one();
        }
    }

    /// Sends a record: with a reserved place, or if there is room; else counts it dropped.
    pub(crate) fn emit(&self, record: Box<UsageRecord>, permit: Option<mpsc::OwnedPermit<Msg>>) {
        let stats = &self.shared.stats;
        if let Some(p) = permit {
            p.send(Msg::Record(record));
            stats.emitted.fetch_add(1, Relaxed);
            self.nudge();
            return;
        }
        match self.shared.tx.try_send(Msg::Record(record)) {
            Ok(()) => {
                stats.emitted.fetch_add(1, Relaxed);
                self.nudge();
            }
            Err(mpsc::error::TrySendError::Full(Msg::Record(record)))
                if self.shared.overflow == Overflow::Wait
                    && tokio::runtime::Handle::try_current().is_ok() =>
            {
                // No place was reserved (a meter without the outer layer): wait off the path.
                let tx = self.shared.tx.clone();
                let stats = Arc::clone(stats);
                tokio::spawn(async move {
                    if tx.send(Msg::Record(record)).await.is_ok() {
                        stats.emitted.fetch_add(1, Relaxed);
                    } else {
                        stats.dropped.fetch_add(1, Relaxed);
                    }
                });
            }
            Err(_) => {
                stats.dropped.fetch_add(1, Relaxed);
                tracing::debug!(target: "chatgate::usage", "usage record dropped: channel full");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Counts the records it is given, and says when.
    #[derive(Debug, Default)]
    struct Count {
        records: Mutex<usize>,
        wrote: Notify,
    }

    impl UsageSink for Count {
        fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
            *self.records.lock().unwrap() += batch.len();
            self.wrote.notify_one();
            Box::pin(std::future::ready(Ok(())))
        }
    }

    const LINGER: Duration = Duration::from_secs(3600);

    fn handle(sink: &Arc<Count>) -> UsageHandle {
        UsageHandleBuilder::default()
            .linger(LINGER)
            .batch(4)
            .sink(Arc::clone(sink) as Arc<dyn UsageSink>)
            .build()
    }

    /// Emits one record and lets the writer take it and start waiting for more.
    async fn one_record_waiting(handle: &UsageHandle) {
        handle.emit(Box::default(), None);
        while handle.shared.tx.capacity() < handle.shared.tx.max_capacity() {
            tokio::task::yield_now().await;
        }
    }

    // The clock is paused: it moves only when every task waits, straight to the next timer
    // (the writer's wait), so a wait that is not cut short shows as an hour gone.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_ends_the_writers_wait() {
        let sink = Arc::new(Count::default());
        let handle = handle(&sink);
        let start = tokio::time::Instant::now();
        one_record_waiting(&handle).await;
        for _ in 0..4 {
            handle.emit(Box::default(), None);
        }
        sink.wrote.notified().await;
        assert_eq!(*sink.records.lock().unwrap(), 4, "one full batch");
        assert!(start.elapsed() < LINGER, "{:?}", start.elapsed());
        handle.close().await;
        assert_eq!(*sink.records.lock().unwrap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_ends_the_writers_wait() {
        let sink = Arc::new(Count::default());
        let handle = handle(&sink);
        let start = tokio::time::Instant::now();
        one_record_waiting(&handle).await;
        handle.flush().await;
        assert_eq!(*sink.records.lock().unwrap(), 1);
        assert!(start.elapsed() < LINGER, "{:?}", start.elapsed());
        one_record_waiting(&handle).await;
        handle.close().await;
        assert_eq!(*sink.records.lock().unwrap(), 2);
        assert!(start.elapsed() < LINGER, "close: {:?}", start.elapsed());
    }
}
