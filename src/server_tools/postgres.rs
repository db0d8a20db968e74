//! [`PgCatalog`]: PostgreSQL functions as catalog functions (cargo feature `postgres`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use tokio_postgres::types::{ToSql, Type};

use super::catalog::{BoxFuture, CatalogError, FunctionCatalog, FunctionSpec, csv};

/// What a [`PgCatalog`] exposes and how it runs functions.
#[derive(Clone, Debug)]
pub struct PgCatalogConfig {
    /// The first segment of the names it answers to: `catalog.schema.fn` is the SQL function
    /// `schema.fn` when `catalog` is this (default `main`).
    pub catalog: String,
    /// The schemas whose functions are exposed; any other name is unknown (default none).
    pub schemas: Vec<String>,
    /// The role functions run as (`SET LOCAL ROLE` in each call's transaction); `None` runs
    /// them as the connecting user.
    pub role: Option<String>,
    /// `SET LOCAL statement_timeout` of each call (default 10 s).
    pub statement_timeout: Duration,
    /// Most rows of a table result (default 100, MLflow's); more are cut and the result says so.
    pub max_rows: usize,
    /// Most bytes of a result's text (default 4096, MLflow's); more are cut and the result says
    /// so.
    pub max_bytes: usize,
}

impl Default for PgCatalogConfig {
    fn default() -> Self {
        Self {
            catalog: "main".to_owned(),
            schemas: Vec::new(),
            role: None,
            statement_timeout: Duration::from_secs(10),
            max_rows: 100,
            max_bytes: 4096,
        }
    }
}

/// PostgreSQL functions as a [`FunctionCatalog`].
///
/// * **Names.** `catalog.schema.fn` is the function `schema.fn` when `catalog` is
///   [`PgCatalogConfig::catalog`] and `schema` is one of [`PgCatalogConfig::schemas`]; an
///   overloaded name (several functions) is a catalog error.
/// * **Description** (from `pg_proc`): `COMMENT ON FUNCTION` is the description; each input
///   parameter (by `proargnames`, `argN` when unnamed) becomes a property whose JSON type
///   follows its SQL type (`smallint`/`integer`/`bigint` → `integer`; `real`/`double
///   precision`/`numeric` → `number`; `boolean`; `json`/`jsonb` → any; arrays → `array` of the
///   element type; `date`, `timestamp…` → `string` with a `format`; anything else →
///   `string`), `format` (the SQL type) and `required` unless it has a default
///   (`pronargdefaults`); `additionalProperties` is `false`.
/// * **Calls.** One transaction per call: `SET LOCAL statement_timeout`, `SET LOCAL ROLE`
///   (when configured), then `SELECT to_json(t)::text FROM "schema"."fn"(p => $1::type, …) AS t
///   LIMIT max_rows + 1`: identifiers are quoted and come from the system catalog, types are
///   the catalog's, and every argument is a bound parameter (sent as text and cast), never
///   SQL text. Parameters left out must have defaults (named notation skips them).
/// * **Results.** A function that returns one value (not `SETOF`, one column) gives the value
///   as text (`NULL` for null); any other gives CSV ([`csv`]) with the column names. More than
///   `max_rows` rows, or more than `max_bytes` bytes, are cut and a last line says
///   `(truncated: …)`. An SQL error (including the statement timeout) is the call's error
///   text: `<message> (SQLSTATE <code>)`.
#[derive(Clone)]
pub struct PgCatalog {
    pool: Pool,
    config: Arc<PgCatalogConfig>,
}

impl fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCatalog")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One function, as the system catalog describes it.
#[derive(Debug)]
struct PgFunction {
    schema: String,
    name: String,
    returns_set: bool,
    description: Option<String>,
    /// Input parameters: name (empty when unnamed), SQL type.
    params: Vec<(String, String)>,
    /// How many trailing parameters have defaults.
    defaults: usize,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The JSON schema of one SQL type.
fn json_type(sql: &str) -> Value {
    if let Some(element) = sql.strip_suffix("[]") {
        return json!({"type": "array", "items": json_type(element)});
    }
    match sql {
        "smallint" | "integer" | "bigint" => json!({"type": "integer"}),
        "real" | "double precision" => json!({"type": "number"}),
        s if s.starts_with("numeric") => json!({"type": "number"}),
        "boolean" => json!({"type": "boolean"}),
        "json" | "jsonb" => json!({}),
        "date" => json!({"type": "string", "format": "date"}),
        s if s.starts_with("timestamp") => json!({"type": "string", "format": "date-time"}),
        _ => json!({"type": "string"}),
    }
}

/// A JSON value as the text of a PostgreSQL array literal element list.
fn pg_array(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(pg_array).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Null => "NULL".to_owned(),
        Value::String(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        other => format!(
            "\"{}\"",
            other.to_string().replace('\\', "\\\\").replace('"', "\\\"")
        ),
    }
}

/// The text sent for one argument (cast to `sql` by the statement).
fn arg_text(name: &str, sql: &str, v: &Value) -> Result<Option<String>, String> {
    if sql == "json" || sql == "jsonb" {
        return Ok((!v.is_null()).then(|| v.to_string()));
    }
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(_) | Value::Number(_) => Ok(Some(v.to_string())),
        Value::Array(_) if sql.ends_with("[]") => Ok(Some(pg_array(v))),
        _ => Err(format!("the parameter `{name}` ({sql}) cannot take {v}")),
    }
}

impl PgCatalog {
    /// A catalog on `pool`.
    pub fn new(pool: Pool, config: PgCatalogConfig) -> Self {
        Self {
            pool,
            config: Arc::new(config),
        }
    }

    /// A catalog with a pool (16 connections, no TLS) for `url`
    /// (`postgres://user@host:port/db` or key-value form). Connections are made when needed.
    ///
    /// # Errors
    /// The URL is not a PostgreSQL connection string.
    pub fn connect(url: &str, config: PgCatalogConfig) -> Result<Self, CatalogError> {
        Self::pool(url, None, config)
    }

    /// [`connect`](Self::connect) with a password kept out of the URL.
    ///
    /// # Errors
    /// The URL is not a PostgreSQL connection string.
    pub fn connect_with_password(
        url: &str,
        password: &str,
        config: PgCatalogConfig,
    ) -> Result<Self, CatalogError> {
        Self::pool(url, Some(password), config)
    }

    fn pool(
        url: &str,
        password: Option<&str>,
        config: PgCatalogConfig,
    ) -> Result<Self, CatalogError> {
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| CatalogError::new(format!("invalid PostgreSQL URL: {e}")))?;
        if let Some(p) = password {
            pg.password(p);
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|e| CatalogError::new(format!("PostgreSQL pool: {e}")))?;
        Ok(Self::new(pool, config))
    }

    /// The configuration.
    pub fn config(&self) -> &PgCatalogConfig {
        &self.config
    }

    /// `(schema, function)` of `name` when this catalog may expose it.
    fn split<'a>(&self, name: &'a str) -> Option<(&'a str, &'a str)> {
        let mut parts = name.split('.');
        let (catalog, schema, function) = (parts.next()?, parts.next()?, parts.next()?);
        (parts.next().is_none()
            && catalog == self.config.catalog
            && !function.is_empty()
            && self.config.schemas.iter().any(|s| s == schema))
        .then_some((schema, function))
    }

    async fn lookup(&self, name: &str) -> Result<Option<PgFunction>, CatalogError> {
        let Some((schema, function)) = self.split(name) else {
            return Ok(None);
        };
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| CatalogError::new(format!("PostgreSQL: {e}")))?;
        let rows = client
            .query(
                "SELECT p.proretset, obj_description(p.oid, 'pg_proc'), p.pronargs::int4, \
                 p.pronargdefaults::int4, coalesce(p.proargnames, '{}'::text[]), \
                 coalesce(p.proargmodes::text[], '{}'::text[]), \
                 array(SELECT format_type(u.t, NULL) FROM unnest(p.proargtypes::oid[]) \
                 WITH ORDINALITY AS u(t, i) ORDER BY u.i) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 AND p.proname = $2 AND p.prokind = 'f'",
                &[&schema, &function],
            )
            .await
            .map_err(|e| CatalogError::new(format!("PostgreSQL: {}", db_error(&e))))?;
        let row = match rows.as_slice() {
            [] => return Ok(None),
            [row] => row,
            _ => {
                return Err(CatalogError::new(format!(
                    "`{name}` names {} overloaded functions; expose one",
                    rows.len()
                )));
            }
        };
        let nargs = usize::try_from(row.get::<_, i32>(2)).unwrap_or(0);
        let names: Vec<String> = row.get(4);
        let modes: Vec<String> = row.get(5);
        let types: Vec<String> = row.get(6);
        // `proargnames` covers every argument (OUT ones too) when `proargmodes` is set.
        let input_names: Vec<String> = if modes.is_empty() {
            (0..nargs)
                .map(|i| names.get(i).cloned().unwrap_or_default())
                .collect()
        } else {
            modes
                .iter()
                .enumerate()
                .filter(|(_, m)| matches!(m.as_str(), "i" | "b" | "v"))
                .map(|(i, _)| names.get(i).cloned().unwrap_or_default())
                .collect()
        };
        Ok(Some(PgFunction {
            schema: schema.to_owned(),
            name: function.to_owned(),
            returns_set: row.get(0),
            description: row.get(1),
            params: input_names.into_iter().zip(types).collect(),
            defaults: usize::try_from(row.get::<_, i32>(3)).unwrap_or(0),
        }))
    }

    fn spec(name: &str, f: &PgFunction) -> FunctionSpec {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        let first_default = f.params.len().saturating_sub(f.defaults);
        for (i, (pname, sql)) in f.params.iter().enumerate() {
            let key = param_key(i, pname);
            let mut schema = json_type(sql);
            if let Some(o) = schema.as_object_mut() {
                o.insert(
                    "description".into(),
                    Value::String(format!("SQL type {sql}")),
                );
            }
            properties.insert(key.clone(), schema);
            if i < first_default {
                required.push(Value::String(key));
            }
        }
        FunctionSpec {
            name: name.to_owned(),
            description: f.description.clone(),
            parameters: json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            }),
        }
    }

    async fn run(&self, name: &str, args: Value) -> Result<String, String> {
        let f = self
            .lookup(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the function `{name}` does not exist"))?;
        let Value::Object(mut args) = args else {
            return Err("the arguments must be a JSON object".to_owned());
        };
        let named = f.params.iter().all(|(n, _)| !n.is_empty());
        let first_default = f.params.len().saturating_sub(f.defaults);
        let mut values: Vec<Option<String>> = Vec::new();
        let mut sql_args: Vec<String> = Vec::new();
        let mut skipped = false;
        for (i, (pname, sql)) in f.params.iter().enumerate() {
            let key = param_key(i, pname);
            let Some(v) = args.remove(&key) else {
                if i < first_default {
                    return Err(format!("the required parameter `{key}` is missing"));
                }
                skipped = true;
                continue;
            };
            if skipped && !named {
                return Err(format!(
                    "`{key}` cannot be given after an omitted unnamed parameter"
                ));
            }
            values.push(arg_text(&key, sql, &v)?);
            let n = values.len();
            sql_args.push(if named {
                format!("{} => ${n}::{sql}", quote_ident(pname))
            } else {
                format!("${n}::{sql}")
            });
        }
        if let Some(extra) = args.keys().next() {
            return Err(format!("there is no parameter `{extra}`"));
        }
        let call = format!(
            "{}.{}({})",
            quote_ident(&f.schema),
            quote_ident(&f.name),
            sql_args.join(", ")
        );
        let types = vec![Type::TEXT; values.len()];
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();

        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        let mut setup = format!(
            "SET LOCAL statement_timeout = {}",
            self.config.statement_timeout.as_millis().max(1)
        );
        if let Some(role) = &self.config.role {
            setup.push_str(&format!("; SET LOCAL ROLE {}", quote_ident(role)));
        }
        tx.batch_execute(&setup).await.map_err(|e| db_error(&e))?;
        let columns: Vec<String> = tx
            .prepare_typed(&format!("SELECT * FROM {call}"), &types)
            .await
            .map_err(|e| db_error(&e))?
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let statement = tx
            .prepare_typed(
                &format!(
                    "SELECT to_json(t)::text FROM {call} AS t LIMIT {}",
                    self.config.max_rows.saturating_add(1)
                ),
                &types,
            )
            .await
            .map_err(|e| db_error(&e))?;
        let rows = tx
            .query(&statement, &params)
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;

        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                r.get::<_, Option<String>>(0)
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null)
            })
            .collect();
        if !f.returns_set && columns.len() == 1 {
            let text = rows.first().map_or_else(|| "NULL".to_owned(), cell);
            return Ok(self.cut(text, false));
        }
        let more_rows = rows.len() > self.config.max_rows;
        let table: Vec<Vec<Option<String>>> = rows
            .iter()
            .take(self.config.max_rows)
            .map(|row| match row {
                Value::Object(o) => columns
                    .iter()
                    .map(|c| o.get(c).filter(|v| !v.is_null()).map(cell))
                    .collect(),
                v => vec![(!v.is_null()).then(|| cell(v))],
            })
            .collect();
        Ok(self.cut(csv(&columns, &table), more_rows))
    }

    /// `text` within `max_bytes`, with a last line saying when something was cut.
    fn cut(&self, mut text: String, more_rows: bool) -> String {
        let max = self.config.max_bytes;
        let over = text.len() > max;
        if over {
            let mut at = max;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        if more_rows || over {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "(truncated: the result has more than {} rows or {} bytes)",
                self.config.max_rows, max
            ));
        }
        text
    }
}

fn param_key(i: usize, name: &str) -> String {
    if name.is_empty() {
        format!("arg{}", i + 1)
    } else {
        name.to_owned()
    }
}

/// One value as text: strings as they are, other JSON as JSON, null as `NULL`.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".to_owned(),
        other => other.to_string(),
    }
}

impl FunctionCatalog for PgCatalog {
    fn describe<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FunctionSpec>, CatalogError>> {
        Box::pin(async move { Ok(self.lookup(name).await?.map(|f| Self::spec(name, &f))) })
    }

    fn call<'a>(
        &'a self,
        name: &'a str,
        arguments: Value,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.run(name, arguments))
    }
}
