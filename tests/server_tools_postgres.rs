//! `PgCatalog` against the real PostgreSQL at 127.0.0.1:5432, database `test` (cargo feature
//! `postgres`). Each test makes its own uniquely named schema (and role) and drops it.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chatgate::route::ModelRouter;
use chatgate::server_tools::{FunctionCatalog, PgCatalog, PgCatalogConfig, ServerToolsLayer};
use chatgate::{EchoModel, ValidateLayer};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema with the test functions; dropped (with its role) when the test ends.
struct Fixture {
    schema: String,
    role: String,
    client: tokio_postgres::Client,
}

impl Fixture {
    async fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!(
            "{}_{}_{}",
            std::process::id(),
            nanos,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let schema = format!("st_tools_{id}");
        let role = format!("st_role_{id}");
        let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                r#"
CREATE SCHEMA {schema};
CREATE ROLE {role} NOLOGIN;
GRANT USAGE ON SCHEMA {schema} TO {role};
CREATE TABLE {schema}.people (name text, age integer);
INSERT INTO {schema}.people VALUES ('Ada', 36), ('Alan', 41), ('Grace, "Amazing"', 85);
GRANT SELECT ON {schema}.people TO {role};
CREATE FUNCTION {schema}.add(a integer, b integer DEFAULT 10) RETURNS integer
  LANGUAGE sql AS $$ SELECT a + b $$;
COMMENT ON FUNCTION {schema}.add(integer, integer) IS 'Adds two integers.';
CREATE FUNCTION {schema}.people_over(min_age integer) RETURNS TABLE(name text, age integer)
  LANGUAGE sql AS $$ SELECT name, age FROM {schema}.people WHERE age > min_age ORDER BY age $$;
CREATE FUNCTION {schema}.shout(s text) RETURNS text LANGUAGE sql AS $$ SELECT upper(s) $$;
CREATE FUNCTION {schema}.slow() RETURNS integer LANGUAGE sql AS $$ SELECT pg_sleep(30); SELECT 1 $$;
CREATE FUNCTION {schema}.whoami() RETURNS text LANGUAGE sql AS $$ SELECT current_user::text $$;
CREATE FUNCTION {schema}.total(xs integer[], tags jsonb DEFAULT '{{}}') RETURNS numeric
  LANGUAGE sql AS $$ SELECT coalesce(sum(x), 0) + coalesce((tags->>'bonus')::numeric, 0) FROM unnest(xs) x $$;
"#
            ))
            .await
            .unwrap();
        Self {
            schema,
            role,
            client,
        }
    }

    fn config(&self) -> PgCatalogConfig {
        PgCatalogConfig {
            catalog: "main".into(),
            schemas: vec![self.schema.clone()],
            role: Some(self.role.clone()),
            statement_timeout: Duration::from_millis(200),
            max_rows: 100,
            max_bytes: 4096,
        }
    }

    fn name(&self, f: &str) -> String {
        format!("main.{}.{f}", self.schema)
    }

    async fn drop(self) {
        self.client
            .batch_execute(&format!(
                "DROP SCHEMA {} CASCADE; DROP ROLE {};",
                self.schema, self.role
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn describes_functions_from_the_system_catalog() {
    let fx = Fixture::new().await;
    let cat = PgCatalog::connect(URL, fx.config()).unwrap();
    let spec = cat.describe(&fx.name("add")).await.unwrap().unwrap();
    assert_eq!(spec.description.as_deref(), Some("Adds two integers."));
    assert_eq!(
        spec.parameters,
        json!({"type":"object","properties":{
            "a":{"type":"integer","description":"SQL type integer"},
            "b":{"type":"integer","description":"SQL type integer"}},
            "required":["a"],"additionalProperties":false})
    );
    let total = cat.describe(&fx.name("total")).await.unwrap().unwrap();
    assert_eq!(total.parameters["properties"]["xs"]["type"], "array");
    assert_eq!(
        total.parameters["properties"]["xs"]["items"]["type"],
        "integer"
    );
    assert_eq!(total.parameters["required"], json!(["xs"]));
    // Unknown: another catalog, a schema that is not exposed, no such function.
    assert!(
        cat.describe(&format!("other.{}.add", fx.schema))
            .await
            .unwrap()
            .is_none()
    );
    assert!(cat.describe("main.pg_catalog.now").await.unwrap().is_none());
    assert!(cat.describe(&fx.name("nope")).await.unwrap().is_none());
    assert!(
        cat.describe(&format!("{}.x", fx.name("add")))
            .await
            .unwrap()
            .is_none()
    );
    fx.drop().await;
}

#[tokio::test]
async fn calls_scalar_and_table_functions() {
    let fx = Fixture::new().await;
    let cat = PgCatalog::connect(URL, fx.config()).unwrap();
    assert_eq!(
        cat.call(&fx.name("add"), json!({"a": 2, "b": 3})).await,
        Ok("5".into())
    );
    // A default fills the parameter left out.
    assert_eq!(
        cat.call(&fx.name("add"), json!({"a": 2})).await,
        Ok("12".into())
    );
    assert_eq!(
        cat.call(&fx.name("people_over"), json!({"min_age": 40}))
            .await,
        Ok("name,age\nAlan,41\n\"Grace, \"\"Amazing\"\"\",85\n".into())
    );
    assert_eq!(
        cat.call(
            &fx.name("total"),
            json!({"xs": [1, 2, 3], "tags": {"bonus": 0.5}})
        )
        .await,
        Ok("6.5".into())
    );
    // The configured role runs the function.
    assert_eq!(
        cat.call(&fx.name("whoami"), json!({})).await,
        Ok(fx.role.clone())
    );
    // Execution errors are text for the model.
    let err = cat
        .call(&fx.name("add"), json!({"a": "x"}))
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid input syntax for type integer") && err.contains("22P02"),
        "{err}"
    );
    assert_eq!(
        cat.call(&fx.name("add"), json!({"b": 1})).await,
        Err("the required parameter `a` is missing".into())
    );
    assert_eq!(
        cat.call(&fx.name("add"), json!({"a": 1, "c": 1})).await,
        Err("there is no parameter `c`".into())
    );
    fx.drop().await;
}

#[tokio::test]
async fn injection_in_arguments_stays_data() {
    let fx = Fixture::new().await;
    let cat = PgCatalog::connect(URL, fx.config()).unwrap();
    let evil = format!("x'); DROP TABLE {}.people; --", fx.schema);
    assert_eq!(
        cat.call(&fx.name("shout"), json!({"s": evil})).await,
        Ok(evil.to_uppercase())
    );
    let evil_name = format!(
        "{}\"; DROP TABLE {}.people; --",
        fx.name("shout"),
        fx.schema
    );
    assert!(cat.describe(&evil_name).await.unwrap().is_none());
    let n: i64 = fx
        .client
        .query_one(&format!("SELECT count(*) FROM {}.people", fx.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    fx.drop().await;
}

#[tokio::test]
async fn slow_function_hits_the_statement_timeout() {
    let fx = Fixture::new().await;
    let cat = PgCatalog::connect(URL, fx.config()).unwrap();
    let err = cat.call(&fx.name("slow"), json!({})).await.unwrap_err();
    assert_eq!(
        err,
        "canceling statement due to statement timeout (SQLSTATE 57014)"
    );
    fx.drop().await;
}

#[tokio::test]
async fn rows_and_bytes_are_capped() {
    let fx = Fixture::new().await;
    let cat = PgCatalog::connect(
        URL,
        PgCatalogConfig {
            max_rows: 2,
            ..fx.config()
        },
    )
    .unwrap();
    assert_eq!(
        cat.call(&fx.name("people_over"), json!({"min_age": 0}))
            .await,
        Ok(
            "name,age\nAda,36\nAlan,41\n(truncated: the result has more than 2 rows or 4096 bytes)"
                .into()
        )
    );
    let cat = PgCatalog::connect(
        URL,
        PgCatalogConfig {
            max_bytes: 10,
            ..fx.config()
        },
    )
    .unwrap();
    assert_eq!(
        cat.call(&fx.name("people_over"), json!({"min_age": 0}))
            .await,
        Ok("name,age\nA\n(truncated: the result has more than 100 rows or 10 bytes)".into())
    );
    fx.drop().await;
}

#[tokio::test]
async fn round_trip_through_the_gateway_with_the_echo_model() {
    let fx = Fixture::new().await;
    let cat = PgCatalog::connect(URL, fx.config()).unwrap();
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let svc = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(ServerToolsLayer::new(cat))
        .service(router);
    let post = |body: Value| {
        Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    let tool = format!("main__{}__people_over", fx.schema);
    let res = svc
        .clone()
        .oneshot(post(json!({
            "model": "echo",
            "messages": [{"role": "user", "content": format!("call {tool} {{\"min_age\": 80}}")}],
            "tools": [{"type": "uc_function", "uc_function": {"name": fx.name("people_over")}}],
        })))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.ends_with(
            "</uc_function_result>\n\nThe tool returned: name,age\n\"Grace, \"\"Amazing\"\"\",85\n"
        ),
        "{content}"
    );
    // An unknown function is a 400 on its tool.
    let res = svc
        .oneshot(post(json!({
            "model": "echo",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}},
                      {"type": "uc_function", "uc_function": {"name": fx.name("missing")}}],
        })))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["param"], "tools[1].uc_function.name");
    fx.drop().await;
}
