//! [`UsageSink`] and [`UsageHandle`]: records leave the request path through a bounded channel
//! to a writer task, which hands each record at once to the sinks that take records, and
//! batches to the others, each on the sink's own task.

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
/// delays only itself (until its queue of batches is full, then the writer waits for it). A
/// sink that [takes records](Self::takes_records) gets each one at once on the writer's task,
/// and on its own task, in place of the batch, a cue to write out what it took.
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

    /// Whether the sink [takes](Self::take) each record as the writer gets it instead of in
    /// batches (default `false`).
    ///
    /// A record kept for a batch is memory written when its request ended and read again up
    /// to the [linger](UsageHandleBuilder::linger) later, out of cache; taken at once, it is
    /// read while it is still in cache and freed. The sinks of this crate that need no I/O per
    /// record (the in-memory aggregate, the metrics, the JSONL file and the request log) take
    /// records; when every sink does, the writer keeps no record.
    fn takes_records(&self) -> bool {
        false
    }

    /// One record, as soon as the writer gets it, on the writer's task (called only when the
    /// sink [takes records](Self::takes_records)): keep what is needed of it (a line formatted,
    /// a sum added) without waiting or I/O. The sink's next [`write`](Self::write), with an
    /// empty batch, comes at most a linger (or a batch's worth of records) later and is the cue
    /// to write out what it kept; its backlog is bounded as a batch sink's is (the writer waits
    /// once the sink has a queue of such cues).
    fn take(&self, record: &UsageRecord) {
        let _ = record;
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
    Reopen(oneshot::Sender<()>),
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
    /// Wakes the writer before its [gather](UsageHandleBuilder::gather) is over (`None` when
    /// it does not gather: then the request path does not look at the channel's room).
    hurry: Option<Arc<Notify>>,
    pub(crate) overflow: Overflow,
    pub(crate) stats: Arc<Stats>,
    pub(crate) prices: ArcSwap<Prices>,
    pub(crate) counter: Arc<dyn TokenCounter>,
    closed: AtomicBool,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
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
    gather: Option<Duration>,
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
            gather: None,
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

    /// How long a batch gathers once it has a record (default 250 ms; zero: records go to the
    /// sinks as soon as the writer runs).
    ///
    /// One batch costs each sink a wake-up and a write (a system call, for a file): gathering
    /// records for a while makes that cost per batch, not per request. The writer takes records
    /// from the channel as they come (every [gather](Self::gather) under load; sinks that [take
    /// records](UsageSink::takes_records) get each as it is taken, so `/metrics` and
    /// `/v1/usage` show it then); the batch goes out, and
    /// those sinks are cued to write what they took, a linger after its first record, as soon
    /// as it is full, or when [`flush`](UsageHandle::flush), [`reopen`](UsageHandle::reopen) or
    /// [`close`](UsageHandle::close) is called. A sink that takes batches sees a record at most
    /// this long after its request ended (while the sinks keep up).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long records gather in the channel after the writer took what it held (default:
    /// 25 ms; zero: every record wakes the writer).
    ///
    /// Under load the writer then wakes about forty times a second and takes each time what
    /// came meanwhile, rather than being woken by every record or two: waking a task per
    /// request costs more than everything the sinks do with the record. By default the writer
    /// gathers only after a wake-up that took fewer than eight records: when it finds more
    /// (the runtime is saturated, and records wait for the writer's turn anyway), it takes the
    /// next as they come, as records left to gather then are taken colder (`BENCHMARKS.md`,
    /// "Usage"); a gather that is set applies after every wake-up. An idle writer still waits
    /// for the next record, and a gathering one is woken at once when the channel is half
    /// full. Records reach the sinks, `/metrics` and `/v1/usage` up to this much later, and
    /// [`flush`](UsageHandle::flush), [`reopen`](UsageHandle::reopen) and
    /// [`close`](UsageHandle::close) are answered up to this much later.
    pub fn gather(mut self, gather: Duration) -> Self {
        self.gather = Some(gather);
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
            sinks.push(SinkTx {
                tx: stx,
                taker: sink.takes_records().then(|| Arc::clone(&sink)),
            });
            tasks.push(tokio::spawn(sink_task(sink, srx, Arc::clone(&stats))));
        }
        // By default: 25 ms, only after a wake-up that found few records: a writer that finds
        // many at once (the runtime is saturated) takes the next as they come, as records left
        // to gather then are taken colder.
        let (gather, nap_below) = match self.gather {
            Some(g) => (g, usize::MAX),
            None => (Duration::from_millis(25), FEW),
        };
        let hurry = (!gather.is_zero()).then(|| Arc::new(Notify::new()));
        let timing = Timing {
            batch: self.batch,
            linger: self.linger,
            gather: hurry.clone().map(|h| (gather, h)),
            nap_below,
        };
        let dispatcher = tokio::spawn(dispatch(rx, sinks, tasks, timing));
        UsageHandle {
            shared: Arc::new(Shared {
                tx,
                hurry,
                overflow: self.overflow,
                stats,
                prices: ArcSwap::from_pointee(self.prices),
                counter: self.counter,
                closed: AtomicBool::new(false),
                dispatcher: Mutex::new(Some(dispatcher)),
            }),
        }
    }
}

/// A sink as the writer sees it: its queue, and itself when it [takes
/// records](UsageSink::takes_records).
struct SinkTx {
    tx: mpsc::Sender<SinkMsg>,
    taker: Option<Arc<dyn UsageSink>>,
}

/// The writer's timing (see [`UsageHandleBuilder`]).
struct Timing {
    batch: usize,
    linger: Duration,
    /// The gather, and what wakes the writer before it is over; `None`: no gather.
    gather: Option<(Duration, Arc<Notify>)>,
    /// The writer gathers only after a wake-up that took fewer messages than this.
    nap_below: usize,
}

/// By default the writer gathers only after a wake-up that took fewer messages than this: at
/// saturation it finds more each time (about sixteen with one worker, measured), and then
/// takes them as they come.
const FEW: usize = 8;

/// The writer: takes the records the channel holds (each sink that takes records gets each at
/// once; the others' batch gathers them), lets more gather for a while, and cues the sinks a
/// linger after the first record since the last cue, or once a batch's worth has come,
/// whichever is first.
async fn dispatch(
    mut rx: mpsc::Receiver<Msg>,
    sinks: Vec<SinkTx>,
    tasks: Vec<JoinHandle<()>>,
    timing: Timing,
) {
    let Timing {
        batch,
        linger,
        gather,
        nap_below,
    } = timing;
    let mut buf = Vec::with_capacity(batch);
    // Records are kept only for the sinks that take them in batches.
    let mut batches = Batches::new(&sinks, batch);
    // When the sinks are cued next: armed by the first record after a cue. One timer, reset
    // once per cue (not made anew at each wake-up).
    let cue = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(cue);
    let mut armed = false;
    // The wait while records gather (one timer, reset each time).
    let nap = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(nap);
    'run: loop {
        let n = tokio::select! {
            biased;
            n = rx.recv_many(&mut buf, batch) => n,
            () = &mut cue, if armed => {
                send_batch(&sinks, &mut batches).await;
                armed = false;
                continue 'run;
            }
        };
        if n == 0 {
            break;
        }
        let mut closing = false;
        let mut late = Vec::new();
        for msg in buf.drain(..) {
            match msg {
                Msg::Record(r) => batches.add(&sinks, r),
                // After a close, a flush is answered once everything is written, and a reopen
                // is not done; the records still go out.
                Msg::Flush(ack) if closing => late.push(ack),
                Msg::Reopen if closing => {}
                Msg::Flush(ack) => {
                    send_batch(&sinks, &mut batches).await;
                    flush_sinks(&sinks).await;
                    let _ = ack.send(());
                }
                Msg::Reopen => {
                    // Every sink has reopened before the next record is taken: the records
                    // before the reopen go to the old files, those after to the new.
                    send_batch(&sinks, &mut batches).await;
                    let mut acks = Vec::with_capacity(sinks.len());
                    for s in &sinks {
                        let (tx, rx) = oneshot::channel();
                        if s.tx.send(SinkMsg::Reopen(tx)).await.is_ok() {
                            acks.push(rx);
                        }
                    }
                    for a in acks {
                        let _ = a.await;
                    }
                }
                Msg::Close => closing = true,
            }
            if batches.pending >= batch {
                send_batch(&sinks, &mut batches).await;
            }
        }
        if closing {
            rx.close();
            // What is still in the channel goes out first (what came with the close was taken
            // above).
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Record(r) => batches.add(&sinks, r),
                    Msg::Flush(ack) => late.push(ack),
                    Msg::Reopen | Msg::Close => {}
                }
            }
            send_batch(&sinks, &mut batches).await;
            flush_sinks(&sinks).await;
            for ack in late {
                let _ = ack.send(());
            }
            break;
        }
        let now = tokio::time::Instant::now();
        if batches.pending == 0 {
            armed = false;
        } else if linger.is_zero() || (armed && cue.deadline() <= now) {
            // (Records kept coming: the cue's timer was not looked at.)
            send_batch(&sinks, &mut batches).await;
            armed = false;
        } else if !armed {
            cue.as_mut().reset(now + linger);
            armed = true;
        }
        if let Some((gather, hurry)) = &gather
            && n < nap_below
        {
            nap.as_mut().reset(now + *gather);
            tokio::select! {
                biased;
                () = hurry.notified() => {}
                () = &mut nap => {}
            }
        }
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
    /// Records since the sinks were last cued (taken, or in `records`).
    pending: usize,
    /// Whether some sink takes batches (else no record is kept).
    keep: bool,
}

impl Batches {
    fn new(sinks: &[SinkTx], capacity: usize) -> Self {
        let keep = sinks.iter().any(|s| s.taker.is_none());
        Self {
            records: Vec::with_capacity(if keep { capacity } else { 0 }),
            last: None,
            pending: 0,
            keep,
        }
    }

    /// A record from the channel: taken by the sinks that take records, kept for the others.
    fn add(&mut self, sinks: &[SinkTx], record: Box<UsageRecord>) {
        for taker in sinks.iter().filter_map(|s| s.taker.as_ref()) {
            taker.take(&record);
        }
        if self.keep {
            self.records.push(*record);
        }
        self.pending += 1;
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

/// Cues every sink: the batch to those that take batches, an empty one (write out what you
/// took) to those that take records.
async fn send_batch(sinks: &[SinkTx], batches: &mut Batches) {
    if batches.pending == 0 {
        return;
    }
    batches.pending = 0;
    let batch = if batches.keep {
        batches.take()
    } else {
        Arc::clone(&EMPTY)
    };
    for s in sinks {
        let msg = match s.taker {
            Some(_) => SinkMsg::Batch(Arc::clone(&EMPTY)),
            None => SinkMsg::Batch(Arc::clone(&batch)),
        };
        let _ = s.tx.send(msg).await;
    }
}

/// The batch of a sink that takes records.
#[allow(clippy::rc_buffer)]
static EMPTY: std::sync::LazyLock<Arc<Vec<UsageRecord>>> =
    std::sync::LazyLock::new(|| Arc::new(Vec::new()));

async fn flush_sinks(sinks: &[SinkTx]) {
    let mut acks = Vec::with_capacity(sinks.len());
    for s in sinks {
        let (tx, rx) = oneshot::channel();
        if s.tx.send(SinkMsg::Flush(tx)).await.is_ok() {
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
            SinkMsg::Reopen(ack) => {
                let r = sink.reopen().await;
                let _ = ack.send(());
                r
            }
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
            let _ = rx.await;
        }
    }

    /// Asks every sink to reopen its files (log rotation; the proxy does it on SIGHUP).
    pub async fn reopen(&self) {
        if self.shared.tx.send(Msg::Reopen).await.is_ok() {}
    }

    /// Writes and flushes everything emitted so far, then stops the writer and the sinks'
    /// tasks; records emitted later are counted as dropped.
    pub async fn close(&self) {
        if self.shared.closed.swap(true, Relaxed) {
            return;
        }
        let _ = self.shared.tx.send(Msg::Close).await;
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

    /// Wakes the writer while records gather when the channel is half full (places reserved
    /// for requests in flight count as taken); nothing when the writer does not gather.
    fn hurry_if_half_full(&self) {
        let tx = &self.shared.tx;
        if let Some(hurry) = &self.shared.hurry
            && tx.capacity() < tx.max_capacity() / 2
        {
            hurry.notify_one();
        }
    }

    /// Sends a record: with a reserved place, or if there is room; else counts it dropped.
    pub(crate) fn emit(&self, record: Box<UsageRecord>, permit: Option<mpsc::OwnedPermit<Msg>>) {
        let stats = &self.shared.stats;
        if let Some(p) = permit {
            p.send(Msg::Record(record));
            stats.emitted.fetch_add(1, Relaxed);
            self.hurry_if_half_full();
            return;
        }
        match self.shared.tx.try_send(Msg::Record(record)) {
            Ok(()) => {
                stats.emitted.fetch_add(1, Relaxed);
                self.hurry_if_half_full();
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
            // The writer may be letting records gather: let (paused) time go on.
            tokio::time::sleep(Duration::from_millis(1)).await;
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

    /// Takes records one at a time; notes the batches of its cues.
    #[derive(Debug, Default)]
    struct Taker {
        taken: Mutex<Vec<u16>>,
        cues: Mutex<Vec<usize>>,
        took: Notify,
    }

    impl UsageSink for Taker {
        fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
            self.cues.lock().unwrap().push(batch.len());
            Box::pin(std::future::ready(Ok(())))
        }

        fn takes_records(&self) -> bool {
            true
        }

        fn take(&self, record: &UsageRecord) {
            self.taken.lock().unwrap().push(record.status);
            self.took.notify_one();
        }
    }

    fn status(status: u16) -> Box<UsageRecord> {
        Box::new(UsageRecord {
            status,
            ..UsageRecord::default()
        })
    }

    /// A handle with a sink that takes records and one that takes batches of up to `batch`.
    fn taker_and_counter(batch: usize) -> (Arc<Taker>, Arc<Count>, UsageHandle) {
        let taker = Arc::new(Taker::default());
        let count = Arc::new(Count::default());
        let handle = UsageHandleBuilder::default()
            .linger(LINGER)
            .batch(batch)
            .sink(Arc::clone(&taker) as Arc<dyn UsageSink>)
            .sink(Arc::clone(&count) as Arc<dyn UsageSink>)
            .build();
        (taker, count, handle)
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_takes_records_gets_each_at_once_and_its_cue_with_the_batch() {
        let (taker, count, handle) = taker_and_counter(4);
        let start = tokio::time::Instant::now();
        handle.emit(status(200), None);
        taker.took.notified().await;
        assert_eq!(*taker.taken.lock().unwrap(), [200]);
        assert!(
            start.elapsed() < LINGER,
            "taken at once: {:?}",
            start.elapsed()
        );
        assert_eq!(*count.records.lock().unwrap(), 0, "the batch gathers");
        assert!(taker.cues.lock().unwrap().is_empty());
        // A linger later: the batch, and the taker's cue (a batch without records).
        count.wrote.notified().await;
        assert!(start.elapsed() >= LINGER, "{:?}", start.elapsed());
        assert_eq!(*count.records.lock().unwrap(), 1);
        handle.flush().await;
        assert_eq!(*taker.cues.lock().unwrap(), [0]);
        // A full batch cues at once; every record reaches both, in order.
        let again = tokio::time::Instant::now();
        for s in [201, 202, 203, 204, 205] {
            handle.emit(status(s), None);
        }
        count.wrote.notified().await;
        assert!(again.elapsed() < LINGER, "{:?}", again.elapsed());
        handle.close().await;
        assert_eq!(*taker.taken.lock().unwrap(), [200, 201, 202, 203, 204, 205]);
        assert_eq!(*count.records.lock().unwrap(), 6);
        assert!(taker.cues.lock().unwrap().iter().all(|&n| n == 0));
        assert!(
            taker.cues.lock().unwrap().len() >= 3,
            "after the linger, the full batch, close"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn records_that_come_with_the_close_are_written_before_a_late_flush_is_answered() {
        let (taker, count, handle) = taker_and_counter(8);
        // All in the channel before the writer runs: it gets them at once.
        handle.emit(status(200), None);
        handle.shared.tx.try_send(Msg::Close).unwrap();
        handle.emit(status(201), None);
        let (tx, flushed) = oneshot::channel();
        handle.shared.tx.try_send(Msg::Flush(tx)).unwrap();
        handle.emit(status(202), None);
        flushed.await.unwrap();
        assert_eq!(*count.records.lock().unwrap(), 3);
        assert_eq!(*taker.taken.lock().unwrap(), [200, 201, 202]);
        handle.close().await;
        assert_eq!(handle.emitted(), 3);
        assert_eq!(handle.dropped(), 0);
    }

    /// Waits (in paused time) until `taker` has taken `n` records.
    async fn taken(taker: &Taker, n: usize) {
        while taker.taken.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_gather_while_the_writer_waits_unless_the_channel_is_half_full() {
        const GATHER: Duration = Duration::from_secs(60);
        let taker = Arc::new(Taker::default());
        let handle = UsageHandleBuilder::default()
            .capacity(8)
            .gather(GATHER)
            .linger(LINGER)
            .sink(Arc::clone(&taker) as Arc<dyn UsageSink>)
            .build();
        let start = tokio::time::Instant::now();
        // The idle writer is woken by the first record.
        handle.emit(status(200), None);
        taken(&taker, 1).await;
        assert!(start.elapsed() < GATHER, "{:?}", start.elapsed());
        // Then it lets records gather.
        for s in [201, 202] {
            handle.emit(status(s), None);
        }
        taken(&taker, 3).await;
        assert!(start.elapsed() >= GATHER, "{:?}", start.elapsed());
        // Unless the channel is half full: then it is woken at once.
        let again = tokio::time::Instant::now();
        for s in 203..208 {
            handle.emit(status(s), None);
        }
        taken(&taker, 8).await;
        assert!(again.elapsed() < GATHER, "{:?}", again.elapsed());
        handle.close().await;
        assert_eq!(
            *taker.taken.lock().unwrap(),
            [200, 201, 202, 203, 204, 205, 206, 207]
        );
        assert_eq!(handle.dropped(), 0);
    }

    /// Waits (in paused time, moving only to timers) until `taker` has taken `n` records.
    async fn taken_exactly(taker: &Taker, n: usize) {
        while taker.taken.lock().unwrap().len() < n {
            taker.took.notified().await;
        }
    }

    // The default gather applies after a wake-up that took few records, not after one that
    // took many (a test's runtime has one worker; the rule is the same with more).
    #[tokio::test(start_paused = true)]
    async fn by_default_the_writer_gathers_only_after_taking_few_records() {
        const GATHER: Duration = Duration::from_millis(25);
        let taker = Arc::new(Taker::default());
        let handle = UsageHandleBuilder::default()
            .linger(LINGER)
            .sink(Arc::clone(&taker) as Arc<dyn UsageSink>)
            .build();
        let start = tokio::time::Instant::now();
        handle.emit(status(200), None);
        taken_exactly(&taker, 1).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "an idle writer takes it at once"
        );
        // One record taken: the next ones gather.
        for s in [201, 202] {
            handle.emit(status(s), None);
        }
        taken_exactly(&taker, 3).await;
        assert_eq!(start.elapsed(), GATHER);
        // Two taken: they gather again, and this time many come.
        for s in 203..213 {
            handle.emit(status(s), None);
        }
        taken_exactly(&taker, 13).await;
        assert_eq!(start.elapsed(), 2 * GATHER);
        // Many taken: the writer takes the next as it comes.
        handle.emit(status(213), None);
        taken_exactly(&taker, 14).await;
        assert_eq!(start.elapsed(), 2 * GATHER, "taken at once after many");
        handle.close().await;
        let taken = taker.taken.lock().unwrap().clone();
        assert_eq!(taken, (200..214).collect::<Vec<u16>>());
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_sink_takes_records_the_writer_keeps_none() {
        let taker = Arc::new(Taker::default());
        let handle = UsageHandleBuilder::default()
            .linger(LINGER)
            .batch(2)
            .sink(Arc::clone(&taker) as Arc<dyn UsageSink>)
            .build();
        for s in [200, 429, 499] {
            handle.emit(status(s), None);
        }
        handle.close().await;
        assert_eq!(*taker.taken.lock().unwrap(), [200, 429, 499]);
        let cues = taker.cues.lock().unwrap().clone();
        assert!(!cues.is_empty() && cues.iter().all(|&n| n == 0), "{cues:?}");
    }
}
