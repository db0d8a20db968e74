//! [`LocalBackend`]: the counters in this process's memory, and [`Gcra`], the per-minute
//! bucket they are made of.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Limits;
use super::backend::{
    Admit, AdmitRequest, BudgetCheck, Decision, LimitBackend, LimitKind, Refusal, Settle, Status,
    Ticket, TicketBudget, TicketScope, Window,
};

/// The window of every per-minute limit.
pub const WINDOW: Duration = Duration::from_secs(60);
const WINDOW_NS: u128 = 60_000_000_000;

/// A per-minute allowance as a GCRA (generic cell rate algorithm) bucket, exact in integers.
///
/// `limit` units per minute drip in continuously (one every `60 s / limit`), up to the whole
/// `limit` at once: a full bucket admits a burst of `limit`, and over any span of time `t` at
/// most `limit + limit · t / 60 s` units are taken. The state is one number, the *theoretical
/// arrival time* (TAT): the instant at which the bucket would be full again. Units are taken
/// with [`reserve`](Self::reserve) (all or nothing), given back with [`refund`](Self::refund)
/// (never above full) and charged after the fact with [`debit`](Self::debit) (the bucket may go
/// into debt, which later reservations wait out). Times are offsets from any fixed origin; the
/// TAT is kept in `nanoseconds × limit`, so every step is an exact integer operation.
///
/// ```
/// use std::time::Duration;
/// use chatgate::rate_limit::Gcra;
/// let mut b = Gcra::new(60); // one per second, bursts of 60
/// let t0 = Duration::ZERO;
/// assert!(b.reserve(60, t0).is_ok());
/// assert_eq!(b.reserve(1, t0), Err(Some(Duration::from_secs(1))));
/// b.refund(10, t0);
/// assert_eq!(b.remaining(t0), 10);
/// assert_eq!(b.reserve(61, t0), Err(None)); // never fits
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    limit: u64,
    /// Theoretical arrival time, in ns × limit.
    tat: u128,
}

impl Gcra {
    /// A full bucket of `limit` per minute.
    pub const fn new(limit: u64) -> Self {
        Self { limit, tat: 0 }
    }

    /// The limit per minute.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    fn scaled(&self, now: Duration) -> u128 {
        now.as_nanos() * u128::from(self.limit)
    }

    /// Takes `n` units at `now`, or nothing: `Err(Some(wait))` when they fit after `wait`,
    /// `Err(None)` when they never fit (`n` above the limit).
    pub fn reserve(&mut self, n: u64, now: Duration) -> Result<(), Option<Duration>> {
        let wait = self.check(n, now)?;
        if let Some(wait) = wait {
            return Err(Some(wait));
        }
        let now = self.scaled(now);
        self.tat = self.tat.max(now) + u128::from(n) * WINDOW_NS;
        Ok(())
    }

    /// Whether `n` units fit at `now`: `Ok(None)` yes, `Ok(Some(wait))` after `wait`,
    /// `Err(None)` never. Changes nothing.
    pub fn check(&self, n: u64, now: Duration) -> Result<Option<Duration>, Option<Duration>> {
        if n > self.limit || self.limit == 0 {
            return Err(None);
        }
        let now = self.scaled(now);
        let new = self.tat.max(now) + u128::from(n) * WINDOW_NS;
        let capacity = WINDOW_NS * u128::from(self.limit);
        if new - now <= capacity {
            Ok(None)
        } else {
            Ok(Some(self.as_duration(new - now - capacity)))
        }
    }

    /// Gives back `n` units (never above a full bucket).
    pub fn refund(&mut self, n: u64, now: Duration) {
        let now = self.scaled(now);
        self.tat = self
            .tat
            .saturating_sub(u128::from(n) * WINDOW_NS)
            .max(now.min(self.tat));
    }

    /// Charges `n` more units, even beyond empty (a debt).
    pub fn debit(&mut self, n: u64, now: Duration) {
        let now = self.scaled(now);
        self.tat = self.tat.max(now) + u128::from(n) * WINDOW_NS;
    }

    /// Units that could be taken at `now`.
    pub fn remaining(&self, now: Duration) -> u64 {
        let now = self.scaled(now);
        let used = self.tat.saturating_sub(now);
        let capacity = WINDOW_NS * u128::from(self.limit);
        u64::try_from(capacity.saturating_sub(used) / WINDOW_NS).unwrap_or(u64::MAX)
    }

    /// Time until the bucket is full at `now`.
    pub fn reset(&self, now: Duration) -> Duration {
        self.as_duration(self.tat.saturating_sub(self.scaled(now)))
    }

    /// Whether the bucket is full at `now` (its state can be forgotten).
    pub fn is_full(&self, now: Duration) -> bool {
        self.tat <= self.scaled(now)
    }

    /// Changes the limit, keeping the time until full.
    pub fn set_limit(&mut self, limit: u64) {
        if limit != self.limit {
            let tat_ns = self.tat.checked_div(u128::from(self.limit)).unwrap_or(0);
            self.limit = limit;
            self.tat = tat_ns * u128::from(limit);
        }
    }

    fn window(&self, now: Duration) -> Window {
        Window {
            limit: self.limit,
            remaining: self.remaining(now),
            reset: self.reset(now),
        }
    }

    /// Scaled time to a duration, rounded up to the nanosecond.
    fn as_duration(&self, scaled: u128) -> Duration {
        let ns = scaled.div_ceil(u128::from(self.limit.max(1)));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// The counters of one scope.
#[derive(Debug)]
struct ScopeState {
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    in_flight: u32,
}

impl ScopeState {
    fn new(limits: &Limits) -> Self {
        Self {
            requests: limits.rpm.map(|l| Gcra::new(u64::from(l))),
            tokens: limits.tpm.map(Gcra::new),
            in_flight: 0,
        }
    }

    /// Follows a change of limits (configuration reload, key update).
    fn sync(&mut self, limits: &Limits) {
        fn follow(b: &mut Option<Gcra>, limit: Option<u64>) {
            match (b.as_mut(), limit) {
                (Some(g), Some(l)) => g.set_limit(l),
                (None, Some(l)) => *b = Some(Gcra::new(l)),
                (_, None) => *b = None,
            }
        }
        follow(&mut self.requests, limits.rpm.map(u64::from));
        follow(&mut self.tokens, limits.tpm);
    }

    fn is_idle(&self, now: Duration) -> bool {
        self.in_flight == 0
            && self.requests.is_none_or(|b| b.is_full(now))
            && self.tokens.is_none_or(|b| b.is_full(now))
    }

    fn status(&self, now: Duration) -> (Option<Window>, Option<Window>) {
        (
            self.requests.map(|b| b.window(now)),
            self.tokens.map(|b| b.window(now)),
        )
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, ScopeState>,
    /// Forget idle scopes when the map reaches this size.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl Shard {
    fn state(&mut self, key: &str, limits: &Limits, now: Duration) -> &mut ScopeState {
        if !self.map.contains_key(key) {
            if self.map.len() >= self.sweep_at.max(MIN_SWEEP) {
                self.map.retain(|_, s| !s.is_idle(now));
                self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
            }
            self.map.insert(key.to_owned(), ScopeState::new(limits));
        }
        let state = self.map.get_mut(key).expect("inserted above");
        state.sync(limits);
        state
    }
}

/// What a key has spent of its budget in one period.
#[derive(Clone, Copy, Debug, Default)]
struct Spent {
    /// The period's start (Unix milliseconds).
    start: u64,
    tokens: u64,
    micro_usd: u64,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    origin: Instant,
    /// Unix milliseconds at `origin`: budgets' calendar periods follow this clock.
    wall_origin: u64,
    /// Spend per budget key, locked after the shards.
    budgets: Mutex<HashMap<String, Spent>>,
}

/// The limiter's counters in this process's memory: the default backend.
///
/// Cheap to clone: clones share the counters. Make it once (at start) and build every
/// [`RateLimitLayer`](super::RateLimitLayer) around a clone, so a reloaded stack keeps them.
///
/// Scopes live in a fixed number of shards (a `std::sync::Mutex` around a `HashMap` each,
/// picked by the key's hash), so requests of different keys rarely wait on one another; a
/// request's scopes are locked together (in shard order) and admitted all or nothing. Idle
/// scopes (full buckets, nothing in flight) are forgotten when a shard grows, so memory follows
/// the keys in use, not every key ever seen. Time is [`tokio::time::Instant`], so tests can
/// pause and advance it.
///
/// Why not `DashMap` or `governor`: one admission touches up to a few scopes that must be
/// checked and changed together, which wants the locks in our hands (a `DashMap` entry guard per
/// scope, taken in a safe order, is the same thing with a dependency); `governor` is discussed in
/// the [module docs](super).
#[derive(Clone, Debug)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

impl Default for LocalBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBackend {
    /// A backend with one shard per 64 … 1024 (4 × the available parallelism, rounded up to a
    /// power of two, at least 64).
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, usize::from);
        Self::with_shards((cores * 4).next_power_of_two().clamp(64, 1024))
    }

    /// A backend with `n` shards (at least 1).
    pub fn with_shards(n: usize) -> Self {
        Self::with_clock(n, SystemTime::now())
    }

    /// A backend with `n` shards whose wall clock (for budget periods) reads `now` at this
    /// instant and then advances with [`tokio::time::Instant`]: tests start it at a chosen
    /// date and move it with `tokio::time::advance`.
    pub fn with_clock(n: usize, now: SystemTime) -> Self {
        let shards = (0..n.max(1))
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                hasher: RandomState::new(),
                origin: Instant::now(),
                wall_origin: u64::try_from(
                    now.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis(),
                )
                .unwrap_or(u64::MAX),
                budgets: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.inner.origin)
    }

    /// The wall clock of budgets, Unix milliseconds.
    fn wall(&self, now: Duration) -> u64 {
        self.inner
            .wall_origin
            .saturating_add(u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
    }

    fn lock_budgets(&self) -> MutexGuard<'_, HashMap<String, Spent>> {
        self.inner
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds to what the key `key_id` has spent of `budget` in the period holding now: at start,
    /// to carry over what was spent before a restart (this backend's counters live in memory),
    /// e.g. from the usage records (`PgSink::spent_since` the period's
    /// [`start`](super::BudgetPeriod::start), feature `postgres`). `usd` is rounded to the
    /// micro-dollar.
    ///
    /// ```
    /// use chatgate::rate_limit::{Budget, BudgetPeriod, LocalBackend};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let backend = LocalBackend::new();
    /// let budget = Budget::new(BudgetPeriod::Month).tokens(1000);
    /// backend.seed_budget("team-a", &budget, 400, 1.5);
    /// assert_eq!(backend.budget_spent("budget:team-a", BudgetPeriod::Month), (400, 1_500_000));
    /// # }
    /// ```
    pub fn seed_budget(&self, key_id: &str, budget: &super::Budget, tokens: u64, usd: f64) {
        let start = budget.period.start(self.wall(self.now()));
        let mut map = self.lock_budgets();
        let spent = map.entry(super::service::budget_key(key_id)).or_default();
        if spent.start != start {
            *spent = Spent {
                start,
                ..Spent::default()
            };
        }
        spent.tokens = spent.tokens.saturating_add(tokens);
        spent.micro_usd = spent
            .micro_usd
            .saturating_add(super::budget::usd_to_micro(usd));
    }

    /// What the budget `key` (`budget:<key id>`) has spent in the period holding now:
    /// `(tokens, micro_usd)`, zeros when nothing (or in an earlier period).
    pub fn budget_spent(&self, key: &str, period: super::BudgetPeriod) -> (u64, u64) {
        let start = period.start(self.wall(self.now()));
        self.lock_budgets()
            .get(key)
            .filter(|s| s.start == start)
            .map_or((0, 0), |s| (s.tokens, s.micro_usd))
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.inner.hasher.hash_one(key) % self.inner.shards.len() as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves counters that are still consistent numbers.
        self.inner.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Scopes currently remembered (for tests and metrics).
    pub fn scopes(&self) -> usize {
        (0..self.inner.shards.len())
            .map(|i| self.lock(i).map.len())
            .sum()
    }

    /// Requests in flight in the scope `key` (see [`Scope::key`](super::Scope::key)).
    pub fn in_flight(&self, key: &str) -> u32 {
        self.lock(self.shard_of(key))
            .map
            .get(key)
            .map_or(0, |s| s.in_flight)
    }

    /// Decides with the shards locked.
    fn decide(&self, request: AdmitRequest) -> Decision {
        let now = self.now();
        let shard_ids: Vec<usize> = request
            .scopes
            .iter()
            .map(|s| self.shard_of(&s.key))
            .collect();
        let mut order: Vec<usize> = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        // Locked in ascending order: two requests never wait on each other in a cycle.
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.lock(i))).collect();
        fn shard<'g, 'a>(
            guards: &'g mut [(usize, MutexGuard<'a, Shard>)],
            i: usize,
        ) -> &'g mut Shard {
            let at = guards
                .iter()
                .position(|(s, _)| *s == i)
                .expect("every scope's shard is locked");
            &mut guards[at].1
        }

        // Check every scope; nothing changes until all pass.
        let mut refusal: Option<Refusal> = None;
        for (idx, scope) in request.scopes.iter().enumerate() {
            let state = shard(&mut guards, shard_ids[idx]).state(&scope.key, &scope.limits, now);
            let refuse = |limit: LimitKind, value: u64, requested: u64, retry: Option<Duration>| {
                let (r, t) = state.status(now);
                let mut status = Status::default();
                status.tighten(r, t);
                Refusal {
                    scope: idx,
                    limit,
                    value,
                    requested,
                    retry_after: retry,
                    status,
                }
            };
            let mut found = None;
            if let Some(max) = scope.limits.max_concurrent
                && state.in_flight >= max
            {
                // No clock says when a slot frees up: suggest a second.
                let retry = (max > 0).then_some(Duration::from_secs(1));
                found = Some(refuse(LimitKind::Concurrency, u64::from(max), 1, retry));
            }
            if found.is_none()
                && let Some(b) = &state.requests
            {
                match b.check(1, now) {
                    Ok(None) => {}
                    Ok(Some(w)) => found = Some(refuse(LimitKind::Requests, b.limit(), 1, Some(w))),
                    Err(_) => found = Some(refuse(LimitKind::Requests, b.limit(), 1, None)),
                }
            }
            if found.is_none()
                && let Some(b) = &state.tokens
            {
                let n = request.tokens;
                match b.check(n, now) {
                    Ok(None) => {}
                    Ok(Some(w)) => found = Some(refuse(LimitKind::Tokens, b.limit(), n, Some(w))),
                    Err(_) => found = Some(refuse(LimitKind::Tokens, b.limit(), n, None)),
                }
            }
            if let Some(f) = found {
                // Report the refusal that waits longest (never, first).
                let worse = refusal
                    .as_ref()
                    .is_none_or(|r| match (r.retry_after, f.retry_after) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(a), Some(b)) => b > a,
                    });
                if worse {
                    refusal = Some(f);
                }
            }
        }
        // The budget, locked after the shards.
        let mut budgets = request.budget.as_ref().map(|_| self.lock_budgets());
        let wall = self.wall(now);
        if refusal.is_none()
            && let (Some(check), Some(map)) = (&request.budget, budgets.as_deref_mut())
            && let Some(r) = budget_refusal(map, check, request.tokens, wall)
        {
            let mut r = r;
            r.scope = request.scopes.len();
            // The per-minute windows, unchanged, for the headers.
            for (idx, scope) in request.scopes.iter().enumerate() {
                let state =
                    shard(&mut guards, shard_ids[idx]).state(&scope.key, &scope.limits, now);
                let (rq, t) = state.status(now);
                r.status.tighten(rq, t);
            }
            refusal = Some(r);
        }
        if let Some(r) = refusal {
            return Decision::Refused(r);
        }

        // Commit.
        let mut status = Status::default();
        let mut scopes = Vec::with_capacity(request.scopes.len());
        for (idx, scope) in request.scopes.into_iter().enumerate() {
            let state = shard(&mut guards, shard_ids[idx]).state(&scope.key, &scope.limits, now);
            if let Some(b) = &mut state.requests {
                let _ = b.reserve(1, now);
            }
            let mut tokens = 0;
            if let Some(b) = &mut state.tokens {
                let _ = b.reserve(request.tokens, now);
                tokens = request.tokens;
            }
            let slot = scope.limits.max_concurrent.is_some();
            if slot {
                state.in_flight += 1;
            }
            let (r, t) = state.status(now);
            status.tighten(r, t);
            scopes.push(TicketScope {
                key: scope.key,
                limits: scope.limits,
                tokens,
                slot,
            });
        }
        let budget = match (request.budget, budgets.as_deref_mut()) {
            (Some(check), Some(map)) => {
                let start = check.budget.period.start(wall);
                let spent = map.entry(check.key.clone()).or_default();
                if spent.start != start {
                    *spent = Spent {
                        start,
                        ..Spent::default()
                    };
                }
                spent.tokens = spent.tokens.saturating_add(request.tokens);
                spent.micro_usd = spent.micro_usd.saturating_add(check.micro_usd);
                Some(Box::new(TicketBudget {
                    key: check.key,
                    budget: check.budget,
                    period_start: start,
                    tokens: request.tokens,
                    micro_usd: check.micro_usd,
                    price: check.price,
                    used_micro_usd: None,
                }))
            }
            _ => None,
        };
        Decision::Admitted(Ticket { scopes, budget }, status)
    }

    fn apply(&self, ticket: Ticket, used: Option<u64>) {
        let now = self.now();
        if let Some(b) = &ticket.budget {
            let mut map = self.lock_budgets();
            if let Some(spent) = map.get_mut(&b.key)
                && spent.start == b.period_start
            {
                if let Some(used) = used {
                    spent.tokens = spent.tokens.saturating_add(used).saturating_sub(b.tokens);
                }
                if let Some(used) = b.used_micro_usd {
                    spent.micro_usd = spent
                        .micro_usd
                        .saturating_add(used)
                        .saturating_sub(b.micro_usd);
                }
            }
        }
        for scope in ticket.scopes {
            let mut shard = self.lock(self.shard_of(&scope.key));
            let state = shard.state(&scope.key, &scope.limits, now);
            if scope.slot {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            if let (Some(b), Some(used)) = (&mut state.tokens, used)
                && scope.tokens > 0
            {
                if used < scope.tokens {
                    b.refund(scope.tokens - used, now);
                } else if used > scope.tokens {
                    b.debit(used - scope.tokens, now);
                }
            }
        }
    }
}

/// Why `check` cannot take `tokens` and its money now (`wall`: Unix milliseconds), if it
/// cannot. Its `scope` and `status` are filled in by the caller.
fn budget_refusal(
    map: &HashMap<String, Spent>,
    check: &BudgetCheck,
    tokens: u64,
    wall: u64,
) -> Option<Refusal> {
    let period = check.budget.period;
    let start = period.start(wall);
    let spent = map
        .get(&check.key)
        .filter(|s| s.start == start)
        .copied()
        .unwrap_or_default();
    let until_end = Duration::from_millis(period.end(wall).saturating_sub(wall));
    let over = |limit: Option<u64>, spent: u64, asked: u64, kind: LimitKind| {
        let limit = limit?;
        if spent.saturating_add(asked) <= limit {
            return None;
        }
        Some(Refusal {
            scope: 0,
            limit: kind,
            value: limit,
            requested: asked,
            // A request larger than the whole budget never fits.
            retry_after: (asked <= limit).then_some(until_end),
            status: Status::default(),
        })
    };
    over(
        check.budget.tokens,
        spent.tokens,
        tokens,
        LimitKind::BudgetTokens,
    )
    .or_else(|| {
        over(
            check.budget.micro_usd,
            spent.micro_usd,
            check.micro_usd,
            LimitKind::BudgetUsd,
        )
    })
}

impl LimitBackend for LocalBackend {
    fn admit(&self, request: AdmitRequest) -> Admit {
        Admit::Ready(Ok(self.decide(request)))
    }

    fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) -> Settle {
        self.apply(ticket, used_tokens);
        Settle::Done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rate_limit::ScopeCheck;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn gcra_refills_and_goes_into_debt() {
        let mut b = Gcra::new(6); // one per 10 s
        assert!(b.reserve(6, Duration::ZERO).is_ok());
        assert_eq!(b.remaining(Duration::ZERO), 0);
        assert_eq!(b.reset(Duration::ZERO), 60 * S);
        assert_eq!(b.reserve(1, 5 * S), Err(Some(5 * S)));
        assert!(b.reserve(1, 10 * S).is_ok());
        b.debit(3, 10 * S);
        assert_eq!(b.reserve(1, 10 * S), Err(Some(40 * S)));
        b.refund(100, 10 * S);
        assert!(b.is_full(10 * S));
        assert_eq!(b.remaining(10 * S), 6);
        // Fractional rates stay exact: 7 per minute.
        let mut b = Gcra::new(7);
        for _ in 0..7 {
            b.reserve(1, Duration::ZERO).unwrap();
        }
        let wait = b.reserve(1, Duration::ZERO).unwrap_err().unwrap();
        assert_eq!(wait, Duration::from_nanos(60_000_000_000_u64.div_ceil(7)));
        assert!(b.reserve(1, wait).is_ok());
        assert_eq!(Gcra::new(0).check(0, Duration::ZERO), Err(None));
    }

    fn req(tokens: u64, scopes: &[(&str, Limits)]) -> AdmitRequest {
        AdmitRequest {
            scopes: scopes
                .iter()
                .map(|(k, l)| ScopeCheck {
                    key: (*k).to_owned(),
                    limits: *l,
                })
                .collect(),
            tokens,
            budget: None,
        }
    }

    fn admitted(d: Decision) -> (Ticket, Status) {
        match d {
            Decision::Admitted(t, s) => (t, s),
            other => panic!("refused: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn all_or_nothing_across_scopes() {
        let b = LocalBackend::with_shards(4);
        let key = Limits::none().tpm(100);
        let model = Limits::none().tpm(30);
        let (t, s) = admitted(b.decide(req(20, &[("k", key), ("m", model)])));
        assert_eq!(s.tokens.unwrap().remaining, 10);
        // The model scope refuses 20 more: the key scope must not have taken them.
        let Decision::Refused(r) = b.decide(req(20, &[("k", key), ("m", model)])) else {
            panic!()
        };
        assert_eq!((r.scope, r.limit), (1, LimitKind::Tokens));
        let (_, s) = admitted(b.decide(req(80, &[("k", key)])));
        assert_eq!(s.tokens.unwrap().remaining, 0);
        // Settling with 5 used gives 15 back to both scopes.
        b.apply(t, Some(5));
        let (_, s) = admitted(b.decide(req(15, &[("k", key), ("m", model)])));
        assert_eq!(s.tokens.unwrap().remaining, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_slots_are_released() {
        let b = LocalBackend::new();
        let l = Limits::none().max_concurrent(1);
        let (t, _) = admitted(b.decide(req(0, &[("c", l)])));
        assert!(matches!(
            b.decide(req(0, &[("c", l)])),
            Decision::Refused(Refusal {
                limit: LimitKind::Concurrency,
                ..
            })
        ));
        assert_eq!(b.in_flight("c"), 1);
        b.apply(t, None);
        assert_eq!(b.in_flight("c"), 0);
        admitted(b.decide(req(0, &[("c", l)])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_settlement_after_the_period_ended_changes_nothing() {
        use crate::rate_limit::{Budget, BudgetCheck, BudgetPeriod};
        // 1 h periods, starting 1 s before the end of one.
        let origin = std::time::UNIX_EPOCH + Duration::from_secs(3600 - 1);
        let b = LocalBackend::with_clock(2, origin);
        let period = BudgetPeriod::Every(Duration::from_secs(3600));
        let ask = |tokens| AdmitRequest {
            budget: Some(BudgetCheck {
                key: "budget:k".into(),
                budget: Budget::new(period).tokens(100),
                micro_usd: 0,
                price: None,
            }),
            ..req(tokens, &[])
        };
        let (t, _) = admitted(b.decide(ask(90)));
        assert!(
            matches!(b.decide(ask(20)), Decision::Refused(Refusal { limit: LimitKind::BudgetTokens, retry_after: Some(w), .. }) if w == S)
        );
        tokio::time::advance(S).await;
        // A new period: the old reservation is gone, and its settlement (a debit) is ignored.
        let (t2, _) = admitted(b.decide(ask(20)));
        b.apply(t, Some(500));
        assert_eq!(b.budget_spent("budget:k", period), (20, 0));
        b.apply(t2, Some(5));
        assert_eq!(b.budget_spent("budget:k", period), (5, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_scopes_are_forgotten() {
        let b = LocalBackend::with_shards(1);
        let l = Limits::none().rpm(60);
        for i in 0..MIN_SWEEP {
            admitted(b.decide(req(0, &[(&format!("k{i}"), l)])));
        }
        tokio::time::advance(2 * S).await;
        admitted(b.decide(req(0, &[("new", l)])));
        assert_eq!(b.scopes(), 1);
    }
}
