//! The backend seam: [`LimitBackend`] decides admissions and applies settlements; the layer
//! only builds the question and turns the answer into a response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{Budget, Limits, UnitPrice};

/// One scope of a request, as the backend sees it: a key naming its counters and the limits
/// that apply to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeCheck {
    /// The scope's counter key, unique per scope (see [`Scope::key`](super::Scope::key)).
    pub key: String,
    /// Its limits (at least one of them set).
    pub limits: Limits,
}

/// What a request asks of its scopes: one request, `tokens` tokens and one concurrency slot in
/// each scope that limits them, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmitRequest {
    /// The scopes, most general first (key, then key and model).
    pub scopes: Vec<ScopeCheck>,
    /// Tokens to reserve in each scope with a `tpm` limit (and in the budget).
    pub tokens: u64,
    /// The key's budget, when it has one: checked and reserved with the scopes, all or
    /// nothing.
    pub budget: Option<BudgetCheck>,
}

/// What a request asks of its key's [`Budget`]: [`AdmitRequest::tokens`] tokens and
/// `micro_usd`, in the period holding the backend's current time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetCheck {
    /// The budget's counter key (`budget:<key id>`).
    pub key: String,
    /// The budget.
    pub budget: Budget,
    /// The worst-case cost reserved: the prompt estimate at the input price plus the
    /// completion bound at the output price (0 without a price).
    pub micro_usd: u64,
    /// The requested model's price, used to settle the exact cost.
    pub price: Option<UnitPrice>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute (`rpm`).
    Requests,
    /// Tokens per minute (`tpm`).
    Tokens,
    /// Requests in flight (`max_concurrent`).
    Concurrency,
    /// The tokens of the key's [`Budget`] for its period.
    BudgetTokens,
    /// The money of the key's [`Budget`] for its period (values in micro-dollars).
    BudgetUsd,
}

impl LimitKind {
    /// `requests per minute`, `tokens per minute` or `concurrent requests`.
    pub const fn describe(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests per minute",
            LimitKind::Tokens => "tokens per minute",
            LimitKind::Concurrency => "concurrent requests",
            LimitKind::BudgetTokens => "budget tokens",
            LimitKind::BudgetUsd => "budget USD",
        }
    }

    /// Whether it is a budget (429 `budget_exceeded`) rather than a rate limit.
    pub const fn is_budget(self) -> bool {
        matches!(self, LimitKind::BudgetTokens | LimitKind::BudgetUsd)
    }
}

/// The state of one per-minute limit of one scope, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The limit per minute.
    pub limit: u64,
    /// What could be taken now.
    pub remaining: u64,
    /// How long until the scope is back to its full allowance.
    pub reset: Duration,
}

/// The tightest per-minute windows among a request's scopes (the one with the least remaining,
/// for requests and for tokens separately). `None` where no scope limits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Requests per minute.
    pub requests: Option<Window>,
    /// Tokens per minute.
    pub tokens: Option<Window>,
}

impl Status {
    /// Keeps, for each dimension, the window with the least remaining.
    pub fn tighten(&mut self, requests: Option<Window>, tokens: Option<Window>) {
        fn pick(a: &mut Option<Window>, b: Option<Window>) {
            if let Some(b) = b
                && a.is_none_or(|a| b.remaining < a.remaining)
            {
                *a = Some(b);
            }
        }
        pick(&mut self.requests, requests);
        pick(&mut self.tokens, tokens);
    }
}

/// What one scope of an admitted request holds until it is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketScope {
    /// The scope's counter key.
    pub key: String,
    /// Its limits at admission.
    pub limits: Limits,
    /// Tokens reserved in it (0 when it has no `tpm`).
    pub tokens: u64,
    /// Whether it holds a concurrency slot.
    pub slot: bool,
}

/// What an admitted request holds in its key's budget until it is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketBudget {
    /// The budget's counter key.
    pub key: String,
    /// The budget at admission.
    pub budget: Budget,
    /// The start of the period charged (Unix milliseconds): a settlement after the period
    /// ended changes nothing (that period's spend is gone).
    pub period_start: u64,
    /// Tokens reserved.
    pub tokens: u64,
    /// Micro-dollars reserved.
    pub micro_usd: u64,
    /// The model's price, to settle the exact cost.
    pub price: Option<UnitPrice>,
    /// The exact cost, set by the settlement before [`LimitBackend::settle`] when the usage is
    /// known (`None`: keep the money reservation).
    pub used_micro_usd: Option<u64>,
}

/// What an admitted request holds: give it back to [`LimitBackend::settle`] exactly once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ticket {
    /// Per scope.
    pub scopes: Vec<TicketScope>,
    /// In the key's budget (boxed: most tickets have none).
    pub budget: Option<Box<TicketBudget>>,
}

impl Ticket {
    /// The tokens reserved (the same in every scope with a `tpm` and in a budget; 0 without
    /// one).
    pub fn reserved_tokens(&self) -> u64 {
        self.scopes
            .iter()
            .map(|s| s.tokens)
            .chain(self.budget.as_ref().map(|b| b.tokens))
            .max()
            .unwrap_or(0)
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The index of the refusing scope in [`AdmitRequest::scopes`] (its length when the budget
    /// refused).
    pub scope: usize,
    /// The limit that refused.
    pub limit: LimitKind,
    /// The limit's value (per minute, or in flight).
    pub value: u64,
    /// What the request asked of it (1 request, its tokens, 1 slot).
    pub requested: u64,
    /// When the request would fit; `None` when it never can (it asks more than the whole
    /// limit, or the limit is 0). For a budget: when the period ends.
    pub retry_after: Option<Duration>,
    /// The refusing scope's windows, for the headers.
    pub status: Status,
}

/// A backend's answer to an [`AdmitRequest`].
#[derive(Debug)]
pub enum Decision {
    /// Admitted: every scope took its share. Settle the ticket when the response is over.
    Admitted(Ticket, Status),
    /// Refused: no scope took anything.
    Refused(Refusal),
    /// Admitted without checking: the backend could not decide and is configured to fail
    /// open. Nothing to settle, no headers.
    Unchecked,
}

/// The backend could not decide (a store is unreachable) and is configured to fail closed: the
/// layer answers 503.
#[derive(Debug)]
pub struct BackendError {
    message: String,
}

impl BackendError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// An admission answered now (in-memory backends) or later (a network store).
pub enum Admit {
    /// Answered now: no allocation, no await.
    Ready(Result<Decision, BackendError>),
    /// Answered by a future.
    Pending(Pin<Box<dyn Future<Output = Result<Decision, BackendError>> + Send + 'static>>),
}

impl fmt::Debug for Admit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admit::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Admit::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// A settlement applied now, or one to drive to completion (the layer spawns it).
pub enum Settle {
    /// Applied.
    Done,
    /// To be driven.
    Pending(Pin<Box<dyn Future<Output = ()> + Send + 'static>>),
}

impl fmt::Debug for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Settle::Done => f.write_str("Done"),
            Settle::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Where the limiter's counters live: [`LocalBackend`](super::LocalBackend) (in memory, one
/// process) or, with the `redis` feature, `RedisBackend` (shared by
/// several gateway instances).
///
/// A backend is made **once** and shared (it is an `Arc` inside, or put it in one): rebuilding
/// the layer on a configuration reload around the same backend keeps the counters.
pub trait LimitBackend: Send + Sync + 'static {
    /// Admits all of `request`'s scopes, or none: each scope with `rpm` takes one request, with
    /// `tpm` takes `request.tokens`, with `max_concurrent` takes a slot; the budget, when
    /// there is one, takes `request.tokens` and its `micro_usd` in the current period.
    fn admit(&self, request: AdmitRequest) -> Admit;

    /// Gives back what `ticket` holds: the concurrency slots, and with `used_tokens` the
    /// difference between the reservation and the exact use (a refund when less was used, a
    /// debit when more). `None` keeps the reservation as the charge. A budget is settled the
    /// same way, its money with [`TicketBudget::used_micro_usd`].
    fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) -> Settle;
}

impl<T: LimitBackend + ?Sized> LimitBackend for std::sync::Arc<T> {
    fn admit(&self, request: AdmitRequest) -> Admit {
        (**self).admit(request)
    }

    fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) -> Settle {
        (**self).settle(ticket, used_tokens)
    }
}
