//! The PostgreSQL key store and the admin endpoints against the real server at 127.0.0.1:5432
//! (database `test`): `cargo test --features postgres --test auth_postgres`. Each test works in
//! its own schema, dropped at the end.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatgate::auth::postgres::{AdminKeys, NewKey, PgKeyStore, PgKeyStoreConfig};
use chatgate::auth::{AuthLayer, KeyDigest, KeyStore, Lookup, ModelAccessLayer};
use chatgate::gateway::Gateway;
use chatgate::route::ModelRouter;
use chatgate::{EchoModel, ValidateLayer};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tower::ServiceBuilder;

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const ADMIN: &str = "sk-admin-test-secret";

/// A schema of its own; dropped when the guard goes.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .subsec_nanos();
        Self(format!(
            "cg_keys_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        // A thread of its own: the test's runtime may be gone or paused.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(URL, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn store(schema: &Schema, config: PgKeyStoreConfig) -> PgKeyStore {
    let store = PgKeyStore::connect(URL, config.schema(schema.0.clone())).expect("connect");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate is idempotent");
    store
}

async fn sql(statement: &str) {
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client.batch_execute(statement).await.expect("sql");
}

async fn resolve(
    store: &PgKeyStore,
    digest: &KeyDigest,
) -> (bool, Option<Arc<chatgate::auth::KeyRecord>>) {
    match store.lookup(digest) {
        Lookup::Ready(r) => (true, r.expect("lookup")),
        Lookup::Pending(f) => (false, f.await.expect("lookup")),
    }
}

#[tokio::test]
async fn lookup_reads_the_table_then_the_cache() {
    let schema = Schema::new();
    let store = store(&schema, PgKeyStoreConfig::new()).await;
    let mut new = NewKey::default();
    new.id = Some("team-a".into());
    new.record.models = vec!["qwen*".into()];
    new.record.limits.rpm = Some(60);
    new.record.metadata.insert("team".into(), "a".into());
    let (secret, info) = store.create(new).await.expect("create");
    assert!(secret.expose().starts_with("sk-cg-") && secret.expose().len() == 6 + 64);
    assert!(!format!("{secret:?}").contains("sk-cg-"));
    assert_eq!(info.record.id, "team-a");

    let digest = KeyDigest::of(secret.expose());
    let (ready, found) = resolve(&store, &digest).await;
    assert!(!ready, "a miss queries the table");
    let found = found.expect("known");
    assert_eq!(found.id, "team-a");
    assert_eq!(found.models, ["qwen*"]);
    assert_eq!(found.limits.rpm, Some(60));
    assert_eq!(found.metadata["team"], "a");
    let (ready, found) = resolve(&store, &digest).await;
    assert!(ready && found.is_some(), "a hit is Ready");

    let unknown = KeyDigest::of("sk-nobody");
    let (ready, found) = resolve(&store, &unknown).await;
    assert!(!ready && found.is_none());
    assert!(
        resolve(&store, &unknown).await.0,
        "unknown keys are cached too"
    );

    // The secret is nowhere in the table.
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .expect("c");
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!("SELECT t::text FROM {}.chatgate_keys t", schema.0),
            &[],
        )
        .await
        .expect("rows");
    let text: String = rows[0].get(0);
    assert!(!text.contains(secret.expose()));
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_within_the_ttl() {
    let schema = Schema::new();
    let store = store(
        &schema,
        PgKeyStoreConfig::new().cache_ttl(Duration::from_secs(30)),
    )
    .await;
    let mut new = NewKey::default();
    new.id = Some("k".into());
    let (secret, _) = store.create(new).await.expect("create");
    let digest = KeyDigest::of(secret.expose());
    let (_, found) = resolve(&store, &digest).await;
    assert!(!found.expect("known").disabled);

    // Revoked by another process (here: SQL by hand).
    sql(&format!(
        "UPDATE {}.chatgate_keys SET disabled = true WHERE id = 'k'",
        schema.0
    ))
    .await;

    tokio::time::pause();
    let (ready, found) = resolve(&store, &digest).await;
    assert!(ready);
    assert!(
        !found.expect("cached").disabled,
        "still cached within the TTL"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    let Lookup::Pending(fetch) = store.lookup(&digest) else {
        panic!("the entry expired: the table is read again")
    };
    tokio::time::resume();
    let found = fetch.await.expect("lookup").expect("known");
    assert!(found.disabled, "the revocation is seen after the TTL");
}

async fn gateway(store: PgKeyStore) -> support::Server {
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .service("other", EchoModel::new())
        .build();
    let models = router.models().to_vec();
    let chat = ServiceBuilder::new()
        .layer(AuthLayer::from_shared(Arc::new(store.clone())))
        .layer(ValidateLayer::new())
        .layer(ModelAccessLayer::new())
        .service(router);
    let admin = AdminKeys::new(store, KeyDigest::of(ADMIN));
    let gw = Gateway::with_stack(chat, models)
        .with_route("/admin/keys", admin.clone())
        .with_route("/admin/keys/", admin);
    support::start_with(gw).await
}

async fn call(
    client: &support::HttpClient,
    method: &str,
    url: String,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = req
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    let (status, _, bytes) = support::send(client, req).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

#[tokio::test]
async fn admin_endpoints_over_http() {
    let schema = Schema::new();
    let store = store(&schema, PgKeyStoreConfig::new()).await;
    let server = gateway(store).await;
    let client = support::client();
    let base = format!("http://{}/admin/keys", server.addr);
    let chat_url = format!("http://{}/v1/chat/completions", server.addr);
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    // The admin key is required.
    for auth in [None, Some("sk-not-admin")] {
        let (status, body, _) = call(&client, "GET", base.clone(), auth, None).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let (status, _, _) = call(&client, "POST", base.clone(), auth, Some(json!({}))).await;
        assert_eq!(status, 401);
    }

    // Create: the secret is returned once.
    let (status, created, _) = call(
        &client,
        "POST",
        base.clone(),
        Some(ADMIN),
        Some(json!({"id": "team-a", "models": ["echo"], "rpm": 10,
                    "expires": "2999-01-01T00:00:00Z", "metadata": {"team": "a"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["key"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("sk-cg-"));
    assert_eq!(created["rpm"], 10);
    assert_eq!(created["expires"], "2999-01-01T00:00:00Z");
    let (status, _, _) = call(
        &client,
        "POST",
        base.clone(),
        Some(ADMIN),
        Some(json!({"id": "team-a"})),
    )
    .await;
    assert_eq!(status, 409, "ids are unique");
    let (status, _, _) = call(
        &client,
        "POST",
        base.clone(),
        Some(ADMIN),
        Some(json!({"nope": 1})),
    )
    .await;
    assert_eq!(status, 400);

    // List: never a secret nor a digest.
    let (status, list, text) = call(&client, "GET", base.clone(), Some(ADMIN), None).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], "team-a");
    assert!(!text.contains(&secret) && !text.contains("sk-cg-"));
    assert!(!text.contains(&KeyDigest::of(&secret).to_hex()));
    assert!(list["data"][0].get("sha256").is_none());

    // The new key works, within its models.
    let (status, _, _) = call(
        &client,
        "POST",
        chat_url.clone(),
        Some(&secret),
        Some(chat("echo")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &client,
        "POST",
        chat_url.clone(),
        Some(&secret),
        Some(chat("other")),
    )
    .await;
    assert_eq!(status, 403);

    // Patch: every model, no rpm.
    let (status, patched, _) = call(
        &client,
        "PATCH",
        format!("{base}/team-a"),
        Some(ADMIN),
        Some(json!({"models": [], "rpm": null})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["rpm"], Value::Null);
    let (status, _, _) = call(
        &client,
        "POST",
        chat_url.clone(),
        Some(&secret),
        Some(chat("other")),
    )
    .await;
    assert_eq!(status, 200, "the change applies at once in this process");
    let (status, _, _) = call(
        &client,
        "PATCH",
        format!("{base}/nobody"),
        Some(ADMIN),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404);

    // Revoke: refused at once in this process.
    let (status, revoked, _) = call(
        &client,
        "POST",
        format!("{base}/team-a/revoke"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(revoked["disabled"], true);
    let (status, body, text) = call(
        &client,
        "POST",
        chat_url.clone(),
        Some(&secret),
        Some(chat("echo")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(!text.contains(&secret));

    // The admin key is not a chat key.
    let (status, _, _) = call(&client, "POST", chat_url, Some(ADMIN), Some(chat("echo"))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn budgets_are_persisted_with_the_key() {
    use chatgate::auth::postgres::MIGRATION;
    use chatgate::rate_limit::{Budget, BudgetPeriod};
    let schema = Schema::new();
    // A table made before budgets existed gains the columns at `migrate`.
    sql(&format!(
        "CREATE SCHEMA {s}; SET search_path TO {s}; {MIGRATION}",
        s = schema.0
    ))
    .await;
    let store = store(&schema, PgKeyStoreConfig::new()).await;
    let mut new = NewKey::default();
    new.id = Some("budgeted".into());
    new.record.budget = Some(Budget::new(BudgetPeriod::Week).tokens(5_000_000).usd(25.0));
    let (secret, info) = store.create(new).await.expect("create");
    assert_eq!(info.to_json()["budget_usd"], 25.0);
    assert_eq!(info.to_json()["budget_period"], "week");
    let digest = KeyDigest::of(secret.expose());
    let found = resolve(&store, &digest).await.1.expect("known");
    assert_eq!(
        found.budget,
        Some(Budget::new(BudgetPeriod::Week).tokens(5_000_000).usd(25.0))
    );

    // The admin endpoints set, change and clear budgets.
    let server = gateway(store.clone()).await;
    let client = support::client();
    let url = format!("http://{}/admin/keys/budgeted", server.addr);
    let (status, patched, _) = call(
        &client,
        "PATCH",
        url.clone(),
        Some(ADMIN),
        Some(json!({"budget_tokens": null, "budget_usd": 0.5, "budget_period": "30d"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["budget_tokens"], Value::Null);
    assert_eq!(patched["budget_usd"], 0.5);
    assert_eq!(patched["budget_period"], "30d");
    let stored = store.get("budgeted").await.expect("get").expect("known");
    assert_eq!(
        stored.record.budget,
        Some(Budget::new(BudgetPeriod::Every(Duration::from_secs(30 * 86_400))).usd(0.5))
    );
    let (status, body, _) = call(
        &client,
        "PATCH",
        url.clone(),
        Some(ADMIN),
        Some(json!({"budget_period": "year"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, cleared, _) = call(
        &client,
        "PATCH",
        url,
        Some(ADMIN),
        Some(json!({"budget_usd": null})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(cleared["budget_period"], Value::Null);
    let stored = store.get("budgeted").await.expect("get").expect("known");
    assert_eq!(stored.record.budget, None);
}
