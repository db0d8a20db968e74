//! Upstream routes: replicas, least-outstanding balancing, passive and active health, retries.

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::config::{HealthCheck, RouteConfig};
use super::error::BuildError;
use super::{BoxBody, RoutedModel, UpstreamName};
use crate::body::{End, EndKind, OnEnd, OnEndBody};
use crate::sse::SseEnding;
use crate::upstream::{self, Upstream, UpstreamFailure};
use crate::validate::ValidatedRequest;

/// One upstream replica and its counters.
#[derive(Debug)]
struct Replica {
    upstream: Upstream,
    /// Its host and port, for the response extensions.
    name: UpstreamName,
    weight: u64,
    /// Requests sent and not finished (response body not yet ended or dropped).
    outstanding: AtomicU64,
    /// Consecutive failures since the last success or ejection.
    failures: AtomicU32,
    /// Ejections since the last success (the exponent of the backoff).
    ejections: AtomicU32,
    /// Microseconds since the pool's epoch until which the replica is ejected.
    ejected_until: AtomicU64,
    /// The last active probe succeeded (true without probes).
    probe_ok: AtomicBool,
}

impl Replica {
    fn available(&self, now_us: u64) -> bool {
        self.probe_ok.load(Relaxed) && self.ejected_until.load(Relaxed) <= now_us
    }
}

/// The replicas of one model and how to use them.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) name: RoutedModel,
    replicas: Box<[Replica]>,
    max_attempts: u32,
    eject_after: u32,
    readmit_after: Duration,
    max_readmit_after: Duration,
    epoch: Instant,
    pub(crate) fallback: Box<[String]>,
    pub(crate) health_check: Option<HealthCheck>,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// A uniformly distributed number below `n` (xorshift64*, per thread; not for secrets).
fn rand_below(n: usize) -> usize {
    let x = RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    });
    ((u128::from(x) * n as u128) >> 64) as usize
}

impl Pool {
    pub(crate) fn new(model: &str, config: RouteConfig) -> Result<Self, BuildError> {
        if config.replicas.is_empty() {
            return Err(BuildError::no_replicas(model));
        }
        let replicas = config
            .replicas
            .into_iter()
            .map(|c| {
                let weight = u64::from(c.weight.max(1));
                let upstream = Upstream::new(c).map_err(|e| BuildError::upstream(model, e))?;
                let name = upstream
                    .endpoint()
                    .authority()
                    .map_or_else(String::new, ToString::to_string);
                Ok(Replica {
                    name: UpstreamName::new(name),
                    upstream,
                    weight,
                    outstanding: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                    ejections: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    probe_ok: AtomicBool::new(true),
                })
            })
            .collect::<Result<Box<[_]>, BuildError>>()?;
        Ok(Self {
            name: RoutedModel::new(model),
            replicas,
            max_attempts: config.max_attempts.max(1),
            eject_after: config.eject_after,
            readmit_after: config.readmit_after,
            max_readmit_after: config.max_readmit_after,
            epoch: Instant::now(),
            fallback: config.fallback.into(),
            health_check: config.health_check,
        })
    }

    /// Microseconds since the pool's epoch (truncated).
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Picks a replica not in `tried` (a bit set of indices): two random available replicas,
    /// each drawn with probability proportional to its weight; of the two, the one with fewer
    /// outstanding requests per unit of weight wins, and a tie goes to the first drawn. Idle
    /// replicas (a tie) are therefore chosen by weight, and busy ones converge to outstanding
    /// counts proportional to their weights. `None` when no untried replica is available.
    pub(crate) fn pick(&self, tried: u64) -> Option<usize> {
        // The clock is read only once some replica has been ejected (0 is before any ejection).
        let now = if self
            .replicas
            .iter()
            .all(|r| r.ejected_until.load(Relaxed) == 0)
        {
            0
        } else {
            self.now_us()
        };
        let eligible =
            |i: usize, r: &Replica| (i >= 64 || tried & (1 << i) == 0) && r.available(now);
        let mut total = 0u64;
        let mut only = None;
        let mut count = 0usize;
        for (i, r) in self.replicas.iter().enumerate() {
            if eligible(i, r) {
                total += r.weight;
                count += 1;
                only = Some(i);
            }
        }
        if count <= 1 {
            return only;
        }
        let draw = || {
            let mut x = rand_below(usize::try_from(total).unwrap_or(usize::MAX)) as u64;
            for (i, r) in self.replicas.iter().enumerate() {
                if !eligible(i, r) {
                    continue;
                }
                if x < r.weight {
                    return i;
                }
                x -= r.weight;
            }
            only.unwrap_or(0)
        };
        let (a, b) = (draw(), draw());
        if a == b {
            return Some(a);
        }
        let (ra, rb) = (&self.replicas[a], &self.replicas[b]);
        // oa / wa <= ob / wb, without division.
        let la = ra.outstanding.load(Relaxed) * rb.weight;
        let lb = rb.outstanding.load(Relaxed) * ra.weight;
        Some(if la <= lb { a } else { b })
    }

    fn record_success(&self, i: usize) {
        let r = &self.replicas[i];
        r.failures.store(0, Relaxed);
        r.ejections.store(0, Relaxed);
    }

    fn record_failure(&self, i: usize) {
        if self.eject_after == 0 {
            return;
        }
        let r = &self.replicas[i];
        let failures = r.failures.fetch_add(1, Relaxed) + 1;
        // A re-admitted replica that has not succeeded since is on probation.
        let threshold = if r.ejections.load(Relaxed) > 0 {
            1
        } else {
            self.eject_after
        };
        if failures >= threshold {
            r.failures.store(0, Relaxed);
            let n = r.ejections.fetch_add(1, Relaxed).min(20);
            let backoff = self
                .readmit_after
                .saturating_mul(1 << n)
                .min(self.max_readmit_after);
            // +1: `now_us` truncates, and the ejection must last at least `backoff`.
            let backoff_us = u64::try_from(backoff.as_micros()).unwrap_or(u64::MAX);
            let until = self.now_us().saturating_add(backoff_us).saturating_add(1);
            r.ejected_until.store(until, Relaxed);
        }
    }

    /// Starts sending the request to replica `first`.
    pub(crate) fn start(
        self: &Arc<Self>,
        first: usize,
        req: Request<ValidatedRequest>,
    ) -> Attempts {
        let guard = InFlight::new(Arc::clone(self), first);
        let (parts, body) = req.into_parts();
        let call = self.replicas[first]
            .upstream
            .send(&parts.headers, Some(&self.name), &body);
        Attempts {
            request: Some((parts, body)),
            tried: 0,
            attempt: 1,
            guard: Some(guard),
            call,
        }
    }
}

/// Spawns the active probe of `pool`; it stops when the pool is dropped.
pub(crate) fn spawn_health_check(pool: &Arc<Pool>, check: HealthCheck) -> Result<(), BuildError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| BuildError::no_runtime(pool.name.name()))?;
    let weak: Weak<Pool> = Arc::downgrade(pool);
    handle.spawn(async move {
        let mut tick = tokio::time::interval(check.interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for r in pool.replicas.iter() {
                let ok = r.upstream.probe(&check.path, check.timeout).await;
                r.probe_ok.store(ok, Relaxed);
            }
        }
    });
    Ok(())
}

/// One outstanding request on a replica; settles the counter when dropped.
#[derive(Debug)]
struct InFlight {
    pool: Arc<Pool>,
    index: usize,
}

impl InFlight {
    fn new(pool: Arc<Pool>, index: usize) -> Self {
        pool.replicas[index].outstanding.fetch_add(1, Relaxed);
        Self { pool, index }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.replicas[self.index]
            .outstanding
            .fetch_sub(1, Relaxed);
    }
}

pin_project! {
    /// Sends a request to a pool's replicas until one answers or the attempts run out.
    pub(crate) struct Attempts {
        request: Option<(Parts, ValidatedRequest)>,
        tried: u64,
        attempt: u32,
        guard: Option<InFlight>,
        #[pin]
        call: upstream::SendFuture,
    }
}

/// Every attempt failed before anything reached the client: the last answer, and the request
/// (for a fallback route).
pub(crate) struct Exhausted {
    pub(crate) response: Response<BoxBody>,
    pub(crate) request: Request<ValidatedRequest>,
}

impl Future for Attempts {
    type Output = Result<Response<BoxBody>, Exhausted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let res = match ready!(this.call.as_mut().poll(cx)) {
                Ok(res) => res,
                Err(never) => match never {},
            };
            let guard = this.guard.take().expect("future polled after completion");
            let (pool, index) = (Arc::clone(&guard.pool), guard.index);
            let failure = res.extensions().get::<UpstreamFailure>();
            let server_error = res.status().is_server_error();
            let retryable = match failure {
                Some(f) => f.is_connect(),
                None => server_error,
            };
            // A failure counts now; a success only once its body has ended cleanly (a stream
            // that fails mid-way is a failure).
            let failed = failure.is_some() || server_error;
            if failed {
                pool.record_failure(index);
            }
            if index < 64 {
                *this.tried |= 1 << index;
            }
            if retryable
                && *this.attempt < pool.max_attempts
                && let Some(next) = pool.pick(*this.tried)
            {
                *this.attempt += 1;
                let (parts, body) = this.request.as_ref().expect("request kept for retries");
                let call =
                    pool.replicas[next]
                        .upstream
                        .send(&parts.headers, Some(&pool.name), body);
                *this.guard = Some(InFlight::new(Arc::clone(&pool), next));
                drop(guard);
                this.call.set(call);
                continue;
            }
            let routed = pool.name.clone();
            let upstream_name = pool.replicas[index].name.clone();
            let sse = res.body().is_event_stream();
            let health = Health {
                guard,
                report: !failed,
            };
            // Health first: it must see a failure before the stream ending turns it into an
            // error event.
            // An event stream's ending may be taken over by an observer further out that
            // decodes the stream anyway (usage accounting): the offer goes in the extensions.
            let (ending, handoff) = if sse {
                let (ending, handoff) = SseEnding::handing_off();
                (Some(ending), Some(handoff))
            } else {
                (None, None)
            };
            let mut res = res.map(|inner| OnEndBody::new(inner, (health, ending)).boxed_unsync());
            if let Some(h) = handoff {
                res.extensions_mut().insert(h);
            }
            res.extensions_mut().insert(routed);
            res.extensions_mut().insert(upstream_name);
            if retryable && !pool.fallback.is_empty() {
                let (parts, body) = this.request.take().expect("future polled after completion");
                return Poll::Ready(Err(Exhausted {
                    response: res,
                    request: Request::from_parts(parts, body),
                }));
            }
            return Poll::Ready(Ok(res));
        }
    }
}

/// Passive health accounting for one response, on the end-of-response hook: the request stays
/// outstanding until its body ends or is dropped; when `report`, a clean end counts as a success
/// and a failed stream as a failure. A body dropped before its end (the client went away)
/// reports nothing.
struct Health {
    guard: InFlight,
    report: bool,
}

impl OnEnd for Health {
    fn on_end(self, end: &End<'_>) -> Option<Bytes> {
        let g = &self.guard;
        if self.report {
            match end.kind {
                EndKind::Complete => g.pool.record_success(g.index),
                EndKind::Failed => g.pool.record_failure(g.index),
                EndKind::Dropped => {}
            }
        }
        // Dropping the guard settles the outstanding count.
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamConfig;

    fn pool(weights: &[u32]) -> Arc<Pool> {
        let mut cfg = RouteConfig::new();
        for w in weights {
            cfg = cfg
                .replica(UpstreamConfig::new("http://127.0.0.1:9/v1".parse().unwrap()).weight(*w));
        }
        Arc::new(Pool::new("m", cfg).unwrap())
    }

    #[test]
    fn rand_below_is_in_range_and_spread() {
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[rand_below(5)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn held_requests_split_by_weight() {
        let p = pool(&[1, 3]);
        let mut held = Vec::new();
        for _ in 0..400 {
            let i = p.pick(0).unwrap();
            held.push(InFlight::new(Arc::clone(&p), i));
        }
        let a = p.replicas[0].outstanding.load(Relaxed);
        let b = p.replicas[1].outstanding.load(Relaxed);
        assert_eq!(a + b, 400);
        assert!((95..=105).contains(&a), "{a} {b}");
        drop(held);
        assert_eq!(p.replicas[0].outstanding.load(Relaxed), 0);
    }

    #[test]
    fn idle_replicas_share_by_weight() {
        // Requests that finish before the next one (sequential traffic): 3:1.
        let p = pool(&[3, 1]);
        let mut seen = [0u32; 2];
        for _ in 0..4000 {
            seen[p.pick(0).unwrap()] += 1;
        }
        assert!((2800..=3200).contains(&seen[0]), "{seen:?}");
        // Equal weights: an even split.
        let p = pool(&[1, 1, 1]);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            seen[p.pick(0).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| (850..=1150).contains(&n)), "{seen:?}");
    }

    #[test]
    fn least_outstanding_among_many() {
        let p = pool(&[1, 1, 1, 1]);
        let mut held = Vec::new();
        for _ in 0..400 {
            let i = p.pick(0).unwrap();
            held.push(InFlight::new(Arc::clone(&p), i));
        }
        for r in p.replicas.iter() {
            let n = r.outstanding.load(Relaxed);
            assert!((80..=120).contains(&n), "{n}");
        }
    }

    #[test]
    fn tried_replicas_are_skipped() {
        let p = pool(&[1, 1, 1]);
        for _ in 0..50 {
            assert_eq!(p.pick(0b011), Some(2));
        }
        assert_eq!(p.pick(0b111), None);
    }

    #[test]
    fn ejection_and_probation() {
        let p = pool(&[1, 1]);
        p.record_failure(0);
        p.record_failure(0);
        assert!(p.replicas[0].available(p.now_us()));
        p.record_failure(0);
        let now = p.now_us();
        assert!(!p.replicas[0].available(now));
        // Ejected for readmit_after (5 s), then doubled for a failure on probation.
        assert!(p.replicas[0].available(now + 5_000_002));
        for _ in 0..50 {
            assert_eq!(p.pick(0), Some(1));
        }
        p.record_failure(0);
        let until = p.replicas[0].ejected_until.load(Relaxed);
        assert!(
            until > now + 10_000_000 && until <= p.now_us() + 10_000_001,
            "{until} {now}"
        );
        p.record_success(0);
        assert_eq!(p.replicas[0].ejections.load(Relaxed), 0);
        p.replicas[1].ejected_until.store(u64::MAX, Relaxed);
        p.replicas[0].ejected_until.store(u64::MAX, Relaxed);
        assert_eq!(p.pick(0), None);
    }
}
