//! `PgSink` against the PostgreSQL at 127.0.0.1:5432 (feature `postgres`): each test uses its
//! own schema, dropped at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use chatgate::usage::{PgSink, PgWrite, UsageRecord, UsageSink};
use tokio_postgres::NoTls;

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

struct Schema {
    name: String,
    client: tokio_postgres::Client,
}

impl Schema {
    async fn new(tag: &str) -> Self {
        let (client, conn) = tokio_postgres::connect(URL, NoTls).await.unwrap();
        tokio::spawn(conn);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("usage_{tag}_{}_{nonce}", std::process::id());
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Self { name, client }
    }

    fn table(&self) -> String {
        format!("{}.usage_records", self.name)
    }

    async fn count(&self) -> i64 {
        let row = self
            .client
            .query_one(&format!("SELECT count(*) FROM {}", self.table()), &[])
            .await
            .unwrap();
        row.get(0)
    }

    async fn drop_it(self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

fn records(n: usize, tag: &str) -> Vec<UsageRecord> {
    (0..n)
        .map(|i| UsageRecord {
            request_id: Some(format!("{tag}-{i}")),
            key_id: Some("team-a".into()),
            model: Some("qwen".into()),
            prompt_tokens: 10 + i as u64,
            completion_tokens: 5,
            total_tokens: 15 + i as u64,
            cached_tokens: (i % 2 == 0).then_some(3),
            cost: Some(0.000_01),
            status: 200,
            streamed: i % 3 == 0,
            ttft_ms: Some(12.5),
            duration_ms: 40.0,
            finish_reasons: vec!["stop".into()],
            started_at_ms: 1_735_689_600_000,
            ended_at_ms: 1_735_689_600_040,
            ..UsageRecord::default()
        })
        .collect()
}

#[tokio::test]
async fn both_write_modes_store_every_column_and_are_timed() {
    for (mode, tag) in [(PgWrite::Insert, "ins"), (PgWrite::Copy, "copy")] {
        let schema = Schema::new(tag).await;
        let sink = PgSink::new(URL, &schema.table(), mode, 100_000).unwrap();
        sink.migrate().await.unwrap();
        let batch = records(5000, tag);
        let t = Instant::now();
        for chunk in batch.chunks(250) {
            sink.write(chunk).await.unwrap();
        }
        let took = t.elapsed();
        eprintln!(
            "{mode:?}: 5000 records in batches of 250: {took:?} ({:.1} µs/record)",
            took.as_secs_f64() * 1e6 / 5000.0
        );
        assert_eq!(schema.count().await, 5000);
        let row = schema
            .client
            .query_one(
                &format!(
                    "SELECT key_id, prompt_tokens, cached_tokens, finish_reasons, started_at FROM {} WHERE request_id = $1",
                    schema.table()
                ),
                &[&format!("{tag}-2")],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "team-a");
        assert_eq!(row.get::<_, i64>(1), 12);
        assert_eq!(row.get::<_, Option<i64>>(2), Some(3));
        assert_eq!(row.get::<_, Vec<String>>(3), ["stop"]);
        let started: std::time::SystemTime = row.get(4);
        assert_eq!(
            started,
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_735_689_600_000)
        );
        schema.drop_it().await;
    }
}

#[tokio::test]
async fn the_database_going_away_loses_nothing_that_fits_the_buffer() {
    let schema = Schema::new("outage").await;
    let app = schema.name.clone();
    let url = format!("{URL}?application_name={app}");
    let sink = PgSink::new(&url, &schema.table(), PgWrite::Copy, 1000).unwrap();
    sink.migrate().await.unwrap();
    sink.write(&records(10, "a")).await.unwrap();
    // The database drops the sink's connections.
    schema
        .client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    // This batch may fail (kept) or go through a new connection.
    let _ = sink.write(&records(10, "b")).await;
    // The pool may hand out more dead connections before a fresh one: each failed write keeps
    // its records, and a flush retries them (bounded here).
    let _ = sink.write(&records(10, "c")).await;
    let mut flushed = false;
    for _ in 0..10 {
        if sink.flush().await.is_ok() && sink.buffered() == 0 {
            flushed = true;
            break;
        }
    }
    assert!(flushed, "the sink did not recover");
    assert_eq!(schema.count().await, 30);
    assert_eq!((sink.buffered(), sink.lost()), (0, 0));

    // A database that cannot be reached at all: records wait in the buffer, the oldest
    // beyond it are counted lost.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = PgSink::new(
        &format!("postgres://postgres@127.0.0.1:{closed}/test"),
        &schema.table(),
        PgWrite::Insert,
        15,
    )
    .unwrap();
    assert!(down.write(&records(10, "d")).await.is_err());
    assert!(down.write(&records(10, "e")).await.is_err());
    assert_eq!((down.buffered(), down.lost()), (15, 5));
    schema.drop_it().await;
}

#[tokio::test]
async fn spent_since_sums_a_keys_usage_to_reseed_its_budget() {
    use chatgate::rate_limit::{Budget, BudgetPeriod, LocalBackend};
    use std::time::{Duration, UNIX_EPOCH};
    let schema = Schema::new("spent").await;
    let sink = PgSink::new(URL, &schema.table(), PgWrite::Copy, 1000).unwrap();
    sink.migrate().await.unwrap();
    // 4 records of team-a at 2025-01-01T00:00:00Z (15..=18 tokens, $0.00001 each), one of
    // another key, one of team-a the day before.
    let mut batch = records(4, "spent");
    let mut other = records(1, "other").remove(0);
    other.key_id = Some("team-b".into());
    let mut before = records(1, "before").remove(0);
    before.started_at_ms -= 86_400_000;
    batch.extend([other, before]);
    sink.write(&batch).await.unwrap();
    let jan1 = UNIX_EPOCH + Duration::from_millis(1_735_689_600_000);
    let (tokens, cost) = sink.spent_since("team-a", jan1).await.unwrap();
    assert_eq!(tokens, 15 + 16 + 17 + 18);
    assert!((cost - 0.000_04).abs() < 1e-12, "{cost}");
    assert_eq!(sink.spent_since("nobody", jan1).await.unwrap(), (0, 0.0));

    // Seeded into a backend whose clock says 2025-01-01T12:00:00Z.
    let backend = LocalBackend::with_clock(4, jan1 + Duration::from_secs(43_200));
    let budget = Budget::new(BudgetPeriod::Day).tokens(100);
    let since = UNIX_EPOCH + Duration::from_millis(BudgetPeriod::Day.start(1_735_732_800_000));
    assert_eq!(since, jan1);
    let (tokens, cost) = sink.spent_since("team-a", since).await.unwrap();
    backend.seed_budget("team-a", &budget, tokens, cost);
    assert_eq!(
        backend.budget_spent("budget:team-a", BudgetPeriod::Day),
        (66, 40)
    );
    schema.drop_it().await;
}
