//! [`FunctionCatalog`]: where `uc_function` names are looked up and run; [`HandlerCatalog`]:
//! functions written in Rust.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

/// A boxed, sendable future (catalog calls are not on the hot path).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the model is told about a catalog function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionSpec {
    /// The catalog name, `catalog.schema.function`.
    pub name: String,
    /// What it does (`None`: nothing is said).
    pub description: Option<String>,
    /// Its parameters as a JSON schema object (`{"type":"object","properties":{…},"required":[…]}`).
    pub parameters: Value,
}

/// A catalog could not be asked (its database is down, …). The message is for operators; the
/// client gets a generic 502.
#[derive(Clone, Debug)]
pub struct CatalogError(String);

impl CatalogError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CatalogError {}

/// Functions the gateway can describe to a model and run for it.
///
/// Names are the client's `uc_function` names, `catalog.schema.function`.
pub trait FunctionCatalog: Send + Sync + 'static {
    /// The function `name`, or `Ok(None)` when this catalog does not have it.
    ///
    /// # Errors
    /// The catalog could not be asked.
    fn describe<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FunctionSpec>, CatalogError>>;

    /// Runs `name` with `arguments` (a JSON object that matched the parameter schema). `Ok` is
    /// the result as text (a scalar, or CSV for a table); `Err` is an execution error, which the
    /// model is told as the tool result.
    fn call<'a>(&'a self, name: &'a str, arguments: Value)
    -> BoxFuture<'a, Result<String, String>>;
}

impl<C: FunctionCatalog + ?Sized> FunctionCatalog for Arc<C> {
    fn describe<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FunctionSpec>, CatalogError>> {
        (**self).describe(name)
    }

    fn call<'a>(
        &'a self,
        name: &'a str,
        arguments: Value,
    ) -> BoxFuture<'a, Result<String, String>> {
        (**self).call(name, arguments)
    }
}

/// The function name the model sees for the catalog name `full_name`: dots become `__`, and
/// only the last 64 characters are kept (OpenAI's limit), as MLflow names them.
///
/// ```
/// use chatgate::server_tools::tool_name;
/// assert_eq!(tool_name("main.tools.add"), "main__tools__add");
/// assert_eq!(tool_name(&format!("c.s.{}", "f".repeat(70))).len(), 64);
/// ```
pub fn tool_name(full_name: &str) -> String {
    let joined = full_name.replace('.', "__");
    let count = joined.chars().count();
    if count <= 64 {
        joined
    } else {
        joined.chars().skip(count - 64).collect()
    }
}

/// A table as CSV, the way MLflow renders table results (pandas' `to_csv(index=False)`): a
/// header line, one line per row, `\n` line ends; a field with a comma, quote or line break is
/// quoted (quotes doubled); `None` (SQL `NULL`) is an empty field.
///
/// ```
/// use chatgate::server_tools::csv;
/// let rows = vec![vec![Some("1".to_owned()), Some("a, \"b\"".to_owned())], vec![None, Some("x".to_owned())]];
/// assert_eq!(csv(&["n".to_owned(), "s".to_owned()], &rows), "n,s\n1,\"a, \"\"b\"\"\"\n,x\n");
/// ```
pub fn csv(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    fn field(out: &mut String, s: &str) {
        if s.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(s);
        }
    }
    let mut out = String::new();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(&mut out, c);
    }
    out.push('\n');
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, v.as_deref().unwrap_or(""));
        }
        out.push('\n');
    }
    out
}

type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// A catalog of functions written in Rust, registered by name.
///
/// ```
/// use chatgate::server_tools::HandlerCatalog;
/// use serde_json::{json, Value};
///
/// let catalog = HandlerCatalog::new().register(
///     "main.tools.add",
///     "Adds two integers.",
///     json!({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}),
///     |args: Value| async move {
///         Ok((args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0)).to_string())
///     },
/// );
/// assert_eq!(catalog.names().collect::<Vec<_>>(), ["main.tools.add"]);
/// ```
#[derive(Clone, Default)]
pub struct HandlerCatalog {
    functions: BTreeMap<String, (FunctionSpec, Handler)>,
}

impl fmt::Debug for HandlerCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerCatalog")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl HandlerCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` as `name` (`catalog.schema.function`), described to the model by
    /// `description` and the JSON schema `parameters`. The gateway checks arguments against
    /// the schema (required and typed parameters) before calling the handler. A later
    /// registration of the same name replaces the earlier.
    pub fn register<F, Fut>(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let name = name.into();
        let description = description.into();
        let spec = FunctionSpec {
            name: name.clone(),
            description: (!description.is_empty()).then_some(description),
            parameters,
        };
        let handler: Handler = Arc::new(move |args| Box::pin(handler(args)));
        self.functions.insert(name, (spec, handler));
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }
}

impl FunctionCatalog for HandlerCatalog {
    fn describe<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FunctionSpec>, CatalogError>> {
        let spec = self.functions.get(name).map(|(spec, _)| spec.clone());
        Box::pin(std::future::ready(Ok(spec)))
    }

    fn call<'a>(
        &'a self,
        name: &'a str,
        arguments: Value,
    ) -> BoxFuture<'a, Result<String, String>> {
        match self.functions.get(name) {
            Some((_, handler)) => handler(arguments),
            None => Box::pin(std::future::ready(Err(format!(
                "the function `{name}` does not exist"
            )))),
        }
    }
}
