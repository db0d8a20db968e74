//! Settlement: [`Settlement`] (one per admitted request, in its extensions) and the
//! end-of-response handler that reads the exact usage from the response body.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use serde::Deserialize;

use super::backend::{LimitBackend, Settle, Ticket};
use crate::body::{End, EndKind, OnEnd};
use crate::sse::EventDecoder;
use crate::usage::CheckedAnswer;

/// The exact usage of a response: its total, and its (prompt, completion) split when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Used {
    total: u64,
    split: Option<(u64, u64)>,
}

impl Used {
    fn total(total: u64) -> Self {
        Self { total, split: None }
    }

    /// From the fields of a `usage` object, as the limiter reads them: the total is
    /// `total_tokens`, else the sum of the two counts that are there; `None` when none is.
    pub(crate) fn of(
        prompt: Option<u64>,
        completion: Option<u64>,
        total: Option<u64>,
    ) -> Option<Self> {
        UsageCounts {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
        }
        .used()
    }
}

/// The default bound on the non-streamed response bytes held to read `usage`: 1 MiB.
pub const DEFAULT_MAX_USAGE_BODY: usize = 1 << 20;

struct Inner {
    backend: Arc<dyn LimitBackend>,
    ticket: Mutex<Option<Ticket>>,
    reserved: u64,
}

impl Inner {
    fn take(&self) -> Option<Ticket> {
        self.ticket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn apply(&self, mut ticket: Ticket, used: Option<Used>) {
        if let (Some(b), Some(used)) = (&mut ticket.budget, used) {
            // The exact cost: at the model's price, split when the split is known.
            b.used_micro_usd = Some(match (b.price, used.split) {
                (None, _) => 0,
                (Some(p), Some((prompt, completion))) => p.micro_usd(prompt, completion),
                (Some(p), None) => p.micro_usd_upper(used.total),
            });
        }
        let used = used.map(|u| u.total);
        if let Settle::Pending(fut) = self.backend.settle(ticket, used) {
            // Without a runtime (a body dropped at shutdown) the store is not told: a Redis
            // concurrency slot then expires with its lease.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(fut);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody settled (the inner service failed, or its future or the response was dropped
        // before the body existed): keep the reservation, free the slot.
        if let Some(ticket) = self.take() {
            self.apply(ticket, None);
        }
    }
}

/// The settlement of one admitted request: what it reserved, and the one call that settles it.
///
/// [`RateLimit`](super::RateLimit) puts it in the extensions of every request it admits (with a
/// ticket; requests of unlimited callers have none), and settles it itself when the response
/// body ends, fails or is dropped, with the usage it reads from the body (see the
/// [module docs](super#settlement)) — unless a layer in front asked for it with a
/// [`SettlementSlot`] (the usage meter, which reads every answer anyway), which then settles
/// it. The first settlement wins and later ones are ignored. When
/// every handle is dropped unsettled, the reservation is kept and the concurrency slot is
/// released.
///
/// ```
/// use chatgate::rate_limit::{AdmitRequest, Decision, LimitBackend, Admit, Limits, LocalBackend, ScopeCheck, Settlement};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let backend = LocalBackend::new();
/// let ask = || AdmitRequest { scopes: vec![ScopeCheck { key: "key:a".into(), limits: Limits::none().tpm(100) }], tokens: 80, budget: None };
/// let Admit::Ready(Ok(Decision::Admitted(ticket, _))) = backend.admit(ask()) else { panic!() };
/// let s = Settlement::new(std::sync::Arc::new(backend.clone()), ticket);
/// assert_eq!(s.reserved_tokens(), 80);
/// assert!(s.settle(30));            // 50 refunded
/// assert!(!s.settle(0));            // already settled
/// let Admit::Ready(Ok(Decision::Admitted(..))) = backend.admit(AdmitRequest { tokens: 70, ..ask() }) else { panic!() };
/// # }
/// ```
#[derive(Clone)]
pub struct Settlement {
    inner: Arc<Inner>,
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("reserved_tokens", &self.inner.reserved)
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl Settlement {
    /// The settlement of `ticket`, admitted by `backend`.
    pub fn new(backend: Arc<dyn LimitBackend>, ticket: Ticket) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                reserved: ticket.reserved_tokens(),
                ticket: Mutex::new(Some(ticket)),
            }),
        }
    }

    /// The tokens reserved at admission (0 when no scope limits tokens).
    pub fn reserved_tokens(&self) -> u64 {
        self.inner.reserved
    }

    /// Whether it has been settled.
    pub fn is_settled(&self) -> bool {
        self.inner
            .ticket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none()
    }

    /// Settles with the exact total (prompt + completion) tokens `used`: refunds what the
    /// reservation had in excess, debits what it lacked, and releases the concurrency slot.
    /// `false` when it was already settled (nothing happens). A money budget is charged the
    /// total at the higher of the model's two prices (the split is unknown): prefer
    /// [`settle_usage`](Self::settle_usage).
    pub fn settle(&self, used: u64) -> bool {
        self.settle_with(Some(Used::total(used)))
    }

    /// Settles with the exact prompt and completion tokens: as [`settle`](Self::settle), and a
    /// money budget is charged their exact cost.
    pub fn settle_usage(&self, prompt_tokens: u64, completion_tokens: u64) -> bool {
        self.settle_with(Some(Used {
            total: prompt_tokens.saturating_add(completion_tokens),
            split: Some((prompt_tokens, completion_tokens)),
        }))
    }

    /// Settles keeping the reservation as the charge (the usage is unknown), releasing the
    /// concurrency slot. `false` when it was already settled.
    pub fn keep_reservation(&self) -> bool {
        self.settle_with(None)
    }

    /// Settles with `used` (its split charged exactly), or keeping the reservation (`None`).
    pub(crate) fn settle_with(&self, used: Option<Used>) -> bool {
        match self.inner.take() {
            Some(ticket) => {
                self.inner.apply(ticket, used);
                true
            }
            None => false,
        }
    }
}

/// Where a layer in front of [`RateLimit`](super::RateLimit) that reads every response's exact
/// usage itself — the [usage meter](crate::usage::UsageMeterLayer) — takes the request's
/// [`Settlement`], so that the body is read once, not once by each.
///
/// The layer puts a slot in the request's extensions; the limiter, finding it, puts the
/// settlement of the request it admits there and does not read the response body. The layer
/// then settles as the limiter would have: with the `usage` the upstream reported, the whole
/// reservation refunded for an error status (4xx/5xx), the reservation kept when the usage is
/// unknown. A settlement nobody settles keeps its reservation and frees its concurrency slot
/// when the last handle to it is dropped, as always.
///
/// Under a [`UsageLayer`](crate::usage::UsageLayer), put a slot of your own outside it or
/// inside its [`UsageMeterLayer`](crate::usage::UsageMeterLayer), not between the two: the
/// usage layer hands the request's record to its meter through the slot it puts in the
/// request, and a slot put in its place would hide the record from the meter.
#[derive(Clone)]
pub struct SettlementSlot(Holder);

#[derive(Clone)]
enum Holder {
    Own(Arc<Mutex<Option<Settlement>>>),
    /// A cell inside a value the layer already shares (the usage meter's record draft): no
    /// allocation, and the slot does not keep that value alive.
    Within(Weak<dyn SlotCell>),
}

/// What holds a [`SettlementSlot`]'s settlement when the slot does not hold it itself.
pub(crate) trait SlotCell: Send + Sync {
    fn cell(&self) -> &Mutex<Option<Settlement>>;

    /// Whether the layer that settles is there: a slot put in the request before it is known
    /// (by the usage layer, for its meter) is used by the limiter only once the meter says so.
    fn armed(&self) -> bool;

    /// The holder itself, for the layer that put the slot there to find it again.
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

impl Default for SettlementSlot {
    fn default() -> Self {
        Self(Holder::Own(Arc::default()))
    }
}

impl fmt::Debug for SettlementSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filled = self.with(|c| c.is_some()).unwrap_or(false);
        f.debug_struct("SettlementSlot")
            .field("filled", &filled)
            .finish()
    }
}

impl SettlementSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// A slot whose cell is in `holder` (while it lives).
    pub(crate) fn within(holder: Weak<dyn SlotCell>) -> Self {
        Self(Holder::Within(holder))
    }

    /// The value holding the cell, while it lives (`None` for a slot that holds it itself).
    pub(crate) fn holder(&self) -> Option<Arc<dyn SlotCell>> {
        match &self.0 {
            Holder::Own(_) => None,
            Holder::Within(holder) => holder.upgrade(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Settlement>) -> T) -> Option<T> {
        let lock = |m: &Mutex<Option<Settlement>>| {
            f(&mut m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        };
        match &self.0 {
            Holder::Own(cell) => Some(lock(cell)),
            Holder::Within(holder) => holder.upgrade().map(|h| lock(h.cell())),
        }
    }

    /// The settlement put there by the limiter, if it admitted the request with a ticket
    /// (requests of unlimited callers have none).
    pub fn take(&self) -> Option<Settlement> {
        self.with(Option::take).flatten()
    }

    /// Leaves `settlement` here when the slot is armed (see [`SlotCell::armed`]), looking at
    /// its holder once; gives it back when not.
    pub(crate) fn put_if_armed(&self, settlement: Settlement) -> Result<(), Settlement> {
        let held;
        let cell = match &self.0 {
            Holder::Own(cell) => &**cell,
            Holder::Within(holder) => match holder.upgrade() {
                Some(h) if h.armed() => {
                    held = h;
                    held.cell()
                }
                _ => return Err(settlement),
            },
        };
        *cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(settlement);
        Ok(())
    }
}

/// `usage` of a completion or a chunk.
#[derive(Deserialize)]
struct UsageCounts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

impl UsageCounts {
    fn total(&self) -> Option<u64> {
        self.total_tokens
            .or(match (self.prompt_tokens, self.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
            })
    }

    fn used(&self) -> Option<Used> {
        Some(Used {
            total: self.total()?,
            split: self.prompt_tokens.zip(self.completion_tokens),
        })
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<UsageCounts>,
}

/// The total tokens of a JSON object's top-level non-null `usage`.
#[cfg(test)]
fn usage_total(json: &[u8]) -> Option<u64> {
    usage_of(json).map(|u| u.total)
}

/// The usage of a JSON object's top-level non-null `usage`.
fn usage_of(json: &[u8]) -> Option<Used> {
    serde_json::from_slice::<WithUsage>(json)
        .ok()?
        .usage?
        .used()
}

/// Whether `data` has a `"usage"` member that is not `null` (a cheap test before parsing:
/// every chunk of some streams carries `"usage":null`).
fn may_have_usage(data: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    FINDER.find_iter(data).any(|at| {
        let rest = data[at + 7..].trim_ascii_start();
        let rest = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
        !rest.starts_with(b"null")
    })
}

/// How the body is read.
enum Reader {
    /// A JSON body, held up to the bound.
    Json {
        buf: Vec<u8>,
        max: usize,
        over: bool,
    },
    /// An event stream.
    Sse(Box<EventDecoder>),
    /// Not read (an error status, or a body over the bound by its `Content-Length`).
    Skip,
}

/// The end-of-response handler of an admitted request: reads `usage` as the body passes and
/// settles when it ends. A non-streamed answer that the upstream client already read and
/// checked is not read again: its usage comes with it.
pub struct UsageWatch {
    settlement: Settlement,
    reader: Reader,
    /// Usage from the stream, or 0 for an error status.
    used: Option<Used>,
}

impl fmt::Debug for UsageWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageWatch")
            .field("settlement", &self.settlement)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl UsageWatch {
    /// A handler for a response with these head parts.
    pub(crate) fn new(settlement: Settlement, head: &http::response::Parts, max: usize) -> Self {
        let (reader, used) = if head.status.is_client_error() || head.status.is_server_error() {
            // The model generated nothing: the reservation is refunded.
            (Reader::Skip, Some(Used::total(0)))
        } else if head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        {
            (Reader::Sse(Box::default()), None)
        } else if let Some(answer) = head.extensions.get::<CheckedAnswer>() {
            // Read already, where it arrived (the upstream client): not read again.
            let used = answer
                .usage
                .and_then(|u| Used::of(u.prompt_tokens, u.completion_tokens, u.total_tokens));
            (Reader::Skip, used)
        } else {
            let declared = head
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
            match declared {
                Some(n) if n > max => (Reader::Skip, None),
                n => (
                    Reader::Json {
                        buf: Vec::with_capacity(n.unwrap_or(0).min(max)),
                        max,
                        over: false,
                    },
                    None,
                ),
            }
        };
        Self {
            settlement,
            reader,
            used,
        }
    }
}

impl OnEnd for UsageWatch {
    fn on_data(&mut self, data: &Bytes) {
        match &mut self.reader {
            Reader::Json { buf, max, over } => {
                if *over {
                } else if buf.len() + data.len() > *max {
                    *over = true;
                    *buf = Vec::new();
                } else {
                    buf.extend_from_slice(data);
                }
            }
            Reader::Sse(decoder) => {
                let used = &mut self.used;
                decoder.feed(data, |event| {
                    if may_have_usage(event.data())
                        && let Some(u) = usage_of(event.data())
                    {
                        *used = Some(u);
                    }
                });
            }
            Reader::Skip => {}
        }
    }

    fn on_end(self, end: &End<'_>) -> Option<Bytes> {
        let used = match &self.reader {
            Reader::Json {
                buf, over: false, ..
            } if end.kind == EndKind::Complete => usage_of(buf),
            _ => self.used,
        };
        self.settlement.settle_with(used);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_found() {
        assert_eq!(
            usage_total(
                br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#
            ),
            Some(7)
        );
        assert_eq!(
            usage_total(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#),
            Some(7)
        );
        assert_eq!(usage_total(br#"{"usage":null}"#), None);
        assert_eq!(usage_total(b"[DONE]"), None);
        assert!(!may_have_usage(
            br#"{"choices":[{"delta":{"content":"x"}}],"usage" : null}"#
        ));
        assert!(may_have_usage(
            br#"{"choices":[],"usage":{"total_tokens":1}}"#
        ));
        assert!(!may_have_usage(br#"{"choices":[]}"#));
    }
}
