//! [`RedisBackend`] (feature `redis`): the counters in one Redis, shared by several gateway
//! instances.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use tokio::sync::Notify;

use super::backend::{
    Admit, AdmitRequest, BackendError, Decision, LimitBackend, LimitKind, Refusal, Settle, Status,
    Ticket, TicketBudget, TicketScope, Window,
};

/// What a backend does when its store cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Admit without limits (and without headers) until the store is back.
    #[default]
    Open,
    /// Refuse with 503 `service_unavailable` until the store is back.
    Closed,
}

const WINDOW_US: i64 = 60_000_000;

/// Admission, all scopes or none, on Redis's clock. KEYS: per scope its requests, tokens and
/// concurrency keys, then optionally the budget's hash (fields `t` tokens, `u` micro-dollars,
/// one key per period). ARGV: scope count, tokens, window (µs), concurrency lease (ms), then
/// per scope rpm, tpm, max_concurrent (-1: none), then with a budget: its tokens and
/// micro-dollars (-1: none), the micro-dollars asked, the ms until the period ends, the Unix ms
/// at which its key expires. TATs are absolute times in µs (floats).
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local W = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local function tat_of(key)
  local v = redis.call('GET', key)
  if v then return tonumber(v) end
  return 0
end
local function tighten(best, limit, tat)
  local used = math.max(tat - now, 0)
  local rem = math.floor((W - used) * limit / W + 1e-6)
  if rem < 0 then rem = 0 end
  if best[1] < 0 or rem < best[2] then
    best[1] = limit; best[2] = rem; best[3] = math.ceil(used / 1000)
  end
end
local function store(key, tat)
  redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local refusal = nil
for i = 0, n - 1 do
  local rpm = tonumber(ARGV[5 + i * 3])
  local tpm = tonumber(ARGV[6 + i * 3])
  local mc = tonumber(ARGV[7 + i * 3])
  local kr, kt, kc = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  local found = nil
  if mc >= 0 then
    local c = tonumber(redis.call('GET', kc) or '0')
    if c >= mc then
      local retry = 1000
      if mc == 0 then retry = -1 end
      found = {3, retry, mc, 1}
    end
  end
  if not found and rpm >= 0 then
    if rpm == 0 then
      found = {1, -1, 0, 1}
    else
      local new = math.max(tat_of(kr), now) + W / rpm
      if new - now > W + 0.5 then found = {1, math.ceil((new - now - W) / 1000), rpm, 1} end
    end
  end
  if not found and tpm >= 0 then
    if tokens > tpm or tpm == 0 then
      found = {2, -1, tpm, tokens}
    else
      local new = math.max(tat_of(kt), now) + tokens * W / tpm
      if new - now > W + 0.5 then found = {2, math.ceil((new - now - W) / 1000), tpm, tokens} end
    end
  end
  if found and ((not refusal) or (refusal[4] >= 0 and (found[2] < 0 or found[2] > refusal[4]))) then
    local r, tk = {-1, -1, -1}, {-1, -1, -1}
    if rpm > 0 then tighten(r, rpm, tat_of(kr)) end
    if tpm > 0 then tighten(tk, tpm, tat_of(kt)) end
    refusal = {0, i, found[1], found[2], found[3], found[4], r[1], r[2], r[3], tk[1], tk[2], tk[3]}
  end
end
local kb = KEYS[n * 3 + 1]
local b = 5 + n * 3
if (not refusal) and kb then
  local bt_lim, bu_lim = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
  local bu_ask, b_retry = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local spent_t = tonumber(redis.call('HGET', kb, 't') or '0')
  local spent_u = tonumber(redis.call('HGET', kb, 'u') or '0')
  local found = nil
  if bt_lim >= 0 and spent_t + tokens > bt_lim then
    local retry = b_retry
    if tokens > bt_lim then retry = -1 end
    found = {4, retry, bt_lim, tokens}
  elseif bu_lim >= 0 and spent_u + bu_ask > bu_lim then
    local retry = b_retry
    if bu_ask > bu_lim then retry = -1 end
    found = {5, retry, bu_lim, bu_ask}
  end
  if found then
    local r, tk = {-1, -1, -1}, {-1, -1, -1}
    for i = 0, n - 1 do
      local rpm = tonumber(ARGV[5 + i * 3])
      local tpm = tonumber(ARGV[6 + i * 3])
      if rpm > 0 then tighten(r, rpm, tat_of(KEYS[1 + i * 3])) end
      if tpm > 0 then tighten(tk, tpm, tat_of(KEYS[2 + i * 3])) end
    end
    refusal = {0, n, found[1], found[2], found[3], found[4], r[1], r[2], r[3], tk[1], tk[2], tk[3]}
  end
end
if refusal then return refusal end
if kb then
  redis.call('HINCRBY', kb, 't', tokens)
  redis.call('HINCRBY', kb, 'u', tonumber(ARGV[b + 2]))
  redis.call('PEXPIREAT', kb, tonumber(ARGV[b + 4]))
end
local br, bt = {-1, -1, -1}, {-1, -1, -1}
for i = 0, n - 1 do
  local rpm = tonumber(ARGV[5 + i * 3])
  local tpm = tonumber(ARGV[6 + i * 3])
  local mc = tonumber(ARGV[7 + i * 3])
  local kr, kt, kc = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  if rpm > 0 then
    local new = math.max(tat_of(kr), now) + W / rpm
    store(kr, new)
    tighten(br, rpm, new)
  end
  if tpm > 0 then
    local tat = tat_of(kt)
    if tokens > 0 then
      tat = math.max(tat, now) + tokens * W / tpm
      store(kt, tat)
    end
    tighten(bt, tpm, tat)
  end
  if mc >= 0 then
    redis.call('INCR', kc)
    redis.call('PEXPIRE', kc, lease)
  end
end
return {1, br[1], br[2], br[3], bt[1], bt[2], bt[3]}
";

/// Settlement. KEYS: per scope its tokens and concurrency keys, then optionally the budget's
/// hash. ARGV: scope count, window (µs), then per scope tpm (-1: none), token delta (< 0
/// refund, > 0 debit), slot (0/1), then with a budget its token and micro-dollar deltas (the
/// hash of a period that has expired is not recreated).
const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local W = tonumber(ARGV[2])
for i = 0, n - 1 do
  local tpm = tonumber(ARGV[3 + i * 3])
  local delta = tonumber(ARGV[4 + i * 3])
  local slot = tonumber(ARGV[5 + i * 3])
  local kt, kc = KEYS[1 + i * 2], KEYS[2 + i * 2]
  if tpm > 0 and delta ~= 0 then
    local v = redis.call('GET', kt)
    local tat = 0
    if v then tat = tonumber(v) end
    if delta < 0 then
      if tat > now then tat = math.max(tat + delta * W / tpm, now) end
    else
      tat = math.max(tat, now) + delta * W / tpm
    end
    if tat > now then
      redis.call('SET', kt, string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    else
      redis.call('DEL', kt)
    end
  end
  if slot == 1 then
    local c = tonumber(redis.call('GET', kc) or '0')
    if c > 1 then redis.call('DECR', kc) else redis.call('DEL', kc) end
  end
end
local kb = KEYS[n * 2 + 1]
if kb and redis.call('EXISTS', kb) == 1 then
  local b = 3 + n * 3
  redis.call('HINCRBY', kb, 't', tonumber(ARGV[b]))
  redis.call('HINCRBY', kb, 'u', tonumber(ARGV[b + 1]))
end
return 1
";

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    on_error: FailMode,
    lease_ms: u64,
    admit: Script,
    settle: Script,
    errors: AtomicU64,
    down: AtomicBool,
    pending: AtomicUsize,
    idle: Notify,
}

impl Inner {
    fn failed(&self, e: &RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::AcqRel) {
            let mode = match self.on_error {
                FailMode::Open => "admitting requests without limits",
                FailMode::Closed => "refusing requests with 503",
            };
            eprintln!(
                "chatgate: rate limiter: Redis is unreachable ({e}); {mode} until it is back"
            );
        }
    }

    fn succeeded(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            eprintln!("chatgate: rate limiter: Redis is reachable again");
        }
    }

    fn key(&self, scope: &str, suffix: &str) -> String {
        format!("{}{scope}:{suffix}", self.prefix)
    }
}

struct PendingGuard(Arc<Inner>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Builds a [`RedisBackend`].
#[derive(Clone, Debug)]
pub struct RedisBackendBuilder {
    url: String,
    prefix: String,
    on_error: FailMode,
    lease: Duration,
    timeout: Duration,
}

impl RedisBackendBuilder {
    /// The prefix of every key (default `chatgate:rl:`); instances that share limits share it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do when Redis cannot answer (default [`FailMode::Open`]).
    pub fn on_error(mut self, mode: FailMode) -> Self {
        self.on_error = mode;
        self
    }

    /// How long a concurrency slot outlives a gateway that died before releasing it (default
    /// 10 minutes; renewed by every admission in the scope). A response longer than this may
    /// let one more request in.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Longest wait to connect and for an answer (default 1 s); then the request fails open or
    /// closed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The backend. Connects lazily: an unreachable Redis is not an error here, the first
    /// requests find out (and fail open or closed). Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub fn build(self) -> Result<RedisBackend, BackendError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| BackendError::new(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BackendError::new(format!("Redis connection manager: {e}")))?;
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                conn,
                prefix: self.prefix,
                on_error: self.on_error,
                lease_ms: u64::try_from(self.lease.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
                admit: Script::new(ADMIT),
                settle: Script::new(SETTLE),
                errors: AtomicU64::new(0),
                down: AtomicBool::new(false),
                pending: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        })
    }
}

/// The limiter's counters in Redis (feature `redis`), shared by every gateway instance that
/// uses the same Redis and key prefix.
///
/// One round trip per admission: a Lua script checks every scope of the request and takes from
/// all of them or none, atomically, on **Redis's clock** (`TIME`), so instances with skewed
/// clocks still share one timeline. One round trip per settlement, another script (spawned on the
/// runtime when the response ends: the response never waits for it). The buckets are the same
/// GCRA as [`LocalBackend`](super::LocalBackend)'s, with TATs stored as microseconds (floating
/// point in Lua: exact to well under a microsecond for centuries), each key expiring when its
/// bucket is full again; concurrency is a counter with a lease ([`RedisBackendBuilder::lease`]).
/// A key's [budget](super#budgets) is a hash per key and period (`budget:<id>:<period
/// start>`), checked and taken in the same admission script and expiring a day after its
/// period. All of a request's keys must live on one node (no Redis Cluster).
///
/// The connection is a [`ConnectionManager`]: cheap to clone, multiplexed, and it reconnects by
/// itself. When Redis cannot answer, admissions follow [`FailMode`]; the start of each incident
/// is logged once (to stderr, without the URL) and so is the recovery; every failure is counted
/// ([`errors`](Self::errors)). A settlement that fails is lost: its tokens stay charged and its
/// concurrency slot is freed by the lease.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.prefix)
            .field("on_error", &self.inner.on_error)
            .field("errors", &self.errors())
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A builder for the Redis at `url` (`redis://host:port/db`, with a password if needed).
    pub fn builder(url: impl Into<String>) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.into(),
            prefix: "chatgate:rl:".to_owned(),
            on_error: FailMode::Open,
            lease: Duration::from_secs(600),
            timeout: Duration::from_secs(1),
        }
    }

    /// Round trips that failed since start.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Whether the last round trip failed (an incident is in progress).
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    /// Waits until every settlement sent so far has been applied (or failed): for tests and a
    /// graceful shutdown.
    pub async fn flush(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn opt(n: Option<u64>) -> i64 {
    n.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn window(limit: i64, remaining: i64, reset_ms: i64) -> Option<Window> {
    (limit >= 0).then(|| Window {
        limit: limit as u64,
        remaining: remaining.max(0) as u64,
        reset: Duration::from_millis(reset_ms.max(0) as u64),
    })
}

/// Unix milliseconds now.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode(v: &[i64], request: AdmitRequest, period_start: u64) -> Result<Decision, RedisError> {
    let bad = || RedisError::from((redis::ErrorKind::Parse, "unexpected script answer"));
    match v {
        [1, rl, rr, rs, tl, tr, ts] => {
            let status = Status {
                requests: window(*rl, *rr, *rs),
                tokens: window(*tl, *tr, *ts),
            };
            let tokens = request.tokens;
            let scopes = request
                .scopes
                .into_iter()
                .map(|s| TicketScope {
                    tokens: if s.limits.tpm.is_some() { tokens } else { 0 },
                    slot: s.limits.max_concurrent.is_some(),
                    key: s.key,
                    limits: s.limits,
                })
                .collect();
            let budget = request.budget.map(|b| {
                Box::new(TicketBudget {
                    key: b.key,
                    budget: b.budget,
                    period_start,
                    tokens,
                    micro_usd: b.micro_usd,
                    price: b.price,
                    used_micro_usd: None,
                })
            });
            Ok(Decision::Admitted(Ticket { scopes, budget }, status))
        }
        [
            0,
            scope,
            kind,
            retry,
            value,
            requested,
            rl,
            rr,
            rs,
            tl,
            tr,
            ts,
        ] => {
            let limit = match kind {
                1 => LimitKind::Requests,
                2 => LimitKind::Tokens,
                3 => LimitKind::Concurrency,
                4 => LimitKind::BudgetTokens,
                5 => LimitKind::BudgetUsd,
                _ => return Err(bad()),
            };
            Ok(Decision::Refused(Refusal {
                scope: usize::try_from(*scope).map_err(|_| bad())?,
                limit,
                value: (*value).max(0) as u64,
                requested: (*requested).max(0) as u64,
                retry_after: (*retry >= 0).then(|| Duration::from_millis(*retry as u64)),
                status: Status {
                    requests: window(*rl, *rr, *rs),
                    tokens: window(*tl, *tr, *ts),
                },
            }))
        }
        _ => Err(bad()),
    }
}

impl LimitBackend for RedisBackend {
    fn admit(&self, request: AdmitRequest) -> Admit {
        let inner = Arc::clone(&self.inner);
        // Budget periods follow this instance's wall clock (the counters are Redis's).
        let wall = unix_ms_now();
        let period_start = request
            .budget
            .as_ref()
            .map_or(0, |b| b.budget.period.start(wall));
        Admit::Pending(Box::pin(async move {
            let mut conn = inner.conn.clone();
            let mut call = inner.admit.prepare_invoke();
            call.arg(request.scopes.len())
                .arg(request.tokens)
                .arg(WINDOW_US)
                .arg(inner.lease_ms);
            for s in &request.scopes {
                call.key(inner.key(&s.key, "r"))
                    .key(inner.key(&s.key, "t"))
                    .key(inner.key(&s.key, "c"));
                call.arg(opt(s.limits.rpm.map(u64::from)))
                    .arg(opt(s.limits.tpm))
                    .arg(opt(s.limits.max_concurrent.map(u64::from)));
            }
            if let Some(b) = &request.budget {
                let end = b.budget.period.end(wall);
                call.key(inner.key(&format!("{}:{period_start}", b.key), "b"));
                call.arg(opt(b.budget.tokens))
                    .arg(opt(b.budget.micro_usd))
                    .arg(opt(Some(b.micro_usd)))
                    .arg(opt(Some(end.saturating_sub(wall))))
                    // Kept a day past the period, for the settlements of requests in flight.
                    .arg(opt(Some(end.saturating_add(86_400_000))));
            }
            let answer = call
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .and_then(|v| decode(&v, request, period_start));
            match answer {
                Ok(decision) => {
                    inner.succeeded();
                    Ok(decision)
                }
                Err(e) => {
                    inner.failed(&e);
                    match inner.on_error {
                        FailMode::Open => Ok(Decision::Unchecked),
                        FailMode::Closed => Err(BackendError::new("Redis is unreachable")),
                    }
                }
            }
        }))
    }

    fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) -> Settle {
        let nothing = used_tokens.is_none()
            && !ticket.scopes.iter().any(|s| s.slot)
            && ticket
                .budget
                .as_ref()
                .is_none_or(|b| b.used_micro_usd.is_none());
        if nothing || (ticket.scopes.is_empty() && ticket.budget.is_none()) {
            return Settle::Done;
        }
        let inner = Arc::clone(&self.inner);
        inner.pending.fetch_add(1, Ordering::AcqRel);
        // Counts the settlement done however the future ends (also dropped unpolled).
        let guard = PendingGuard(Arc::clone(&inner));
        Settle::Pending(Box::pin(async move {
            let _guard = guard;
            let mut conn = inner.conn.clone();
            let mut call = inner.settle.prepare_invoke();
            call.arg(ticket.scopes.len()).arg(WINDOW_US);
            for s in &ticket.scopes {
                call.key(inner.key(&s.key, "t")).key(inner.key(&s.key, "c"));
                let delta = match used_tokens {
                    Some(used) if s.tokens > 0 => opt(Some(used)) - opt(Some(s.tokens)),
                    _ => 0,
                };
                call.arg(opt(s.limits.tpm))
                    .arg(delta)
                    .arg(i64::from(s.slot));
            }
            if let Some(b) = &ticket.budget {
                call.key(inner.key(&format!("{}:{}", b.key, b.period_start), "b"));
                let delta = |used: Option<u64>, reserved: u64| {
                    used.map_or(0, |u| opt(Some(u)) - opt(Some(reserved)))
                };
                call.arg(delta(used_tokens, b.tokens))
                    .arg(delta(b.used_micro_usd, b.micro_usd));
            }
            match call.invoke_async::<i64>(&mut conn).await {
                Ok(_) => inner.succeeded(),
                Err(e) => inner.failed(&e),
            }
        }))
    }
}
