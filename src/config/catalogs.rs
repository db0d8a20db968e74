//! `[[function_catalogs]]`: where the gateway finds the `uc_function` tools it runs itself
//! ([`crate::server_tools`]).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::raw::{Dur, Source};
use super::server::Size;

/// `[[function_catalogs]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFunctionCatalog {
    kind: Spanned<String>,
    url: Spanned<String>,
    password_env: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    schemas: Spanned<Vec<String>>,
    statement_timeout: Option<Dur>,
    max_rows: Option<Spanned<u64>>,
    max_bytes: Option<Spanned<Size>>,
    catalog: Option<Spanned<String>>,
}

/// One `[[function_catalogs]]` entry of `kind = "postgres"`: PostgreSQL functions exposed as
/// `uc_function` tools (see `chatgate::server_tools::PgCatalog`, feature `postgres`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresCatalog {
    url: String,
    password_env: Option<String>,
    role: Option<String>,
    schemas: Vec<String>,
    statement_timeout: Duration,
    max_rows: usize,
    max_bytes: usize,
    catalog: String,
}

impl PostgresCatalog {
    /// The connection URL (`postgres://user@host:port/db`; never with a password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The environment variable holding the password, if the server wants one.
    pub fn password_env(&self) -> Option<&str> {
        self.password_env.as_deref()
    }

    /// The role functions run as (`SET LOCAL ROLE`), if any.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The exposed schemas.
    pub fn schemas(&self) -> &[String] {
        &self.schemas
    }

    /// Each call's `statement_timeout` (default 10 s).
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// Most rows of a table result (default 100).
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Most bytes of a result (default 4 KiB).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The first name segment it answers to (default `main`).
    pub fn catalog(&self) -> &str {
        &self.catalog
    }

    /// The catalog, with its connection pool (connections are made when first needed).
    ///
    /// # Errors
    /// The URL is unusable, or `password_env` names an unset variable.
    #[cfg(feature = "postgres")]
    pub fn connect(&self) -> Result<crate::server_tools::PgCatalog, ConfigError> {
        use super::ErrorKind;
        use crate::server_tools::{PgCatalog, PgCatalogConfig};
        let fail = |problem: String| ConfigError {
            kind: ErrorKind::Invalid,
            file: None,
            position: None,
            problem,
        };
        let url = self.url.clone();
        if let Some(var) = &self.password_env {
            let password = std::env::var(var).map_err(|_| ConfigError {
                kind: ErrorKind::Env,
                file: None,
                position: None,
                problem: format!(
                    "environment variable `{var}` (password_env of a function catalog) is not set"
                ),
            })?;
            let config = PgCatalogConfig {
                catalog: self.catalog.clone(),
                schemas: self.schemas.clone(),
                role: self.role.clone(),
                statement_timeout: self.statement_timeout,
                max_rows: self.max_rows,
                max_bytes: self.max_bytes,
            };
            return PgCatalog::connect_with_password(&url, &password, config)
                .map_err(|e| fail(format!("function catalog {}: {e}", self.url)));
        }
        PgCatalog::connect(
            &url,
            PgCatalogConfig {
                catalog: self.catalog.clone(),
                schemas: self.schemas.clone(),
                role: self.role.clone(),
                statement_timeout: self.statement_timeout,
                max_rows: self.max_rows,
                max_bytes: self.max_bytes,
            },
        )
        .map_err(|e| fail(format!("function catalog {}: {e}", self.url)))
    }
}

/// A configured function catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FunctionCatalogConfig {
    /// `kind = "postgres"`.
    Postgres(PostgresCatalog),
}

impl Source<'_> {
    pub(super) fn function_catalog(
        &self,
        raw: &RawFunctionCatalog,
    ) -> Result<FunctionCatalogConfig, ConfigError> {
        if raw.kind.get_ref() != "postgres" {
            let msg = format!(
                "unknown function catalog kind {:?}: the only kind is \"postgres\"",
                raw.kind.get_ref()
            );
            return Err(self.invalid(&raw.kind, msg));
        }
        let url = raw.url.get_ref();
        let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        else {
            let msg =
                format!("invalid PostgreSQL URL {url:?}: expected postgres://user@host:port/db");
            return Err(self.invalid(&raw.url, msg));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.split('@').count() > 1
            && authority.split('@').next().is_some_and(|u| u.contains(':'))
        {
            let msg =
                "the URL holds a password: name the variable that holds it with `password_env`"
                    .to_owned();
            return Err(self.invalid(&raw.url, msg));
        }
        let schemas = raw.schemas.get_ref();
        if schemas.is_empty() || schemas.iter().any(|s| s.is_empty() || s.contains('.')) {
            let msg = "schemas must list at least one schema name (without dots)".to_owned();
            return Err(self.invalid(&raw.schemas, msg));
        }
        let catalog = raw
            .catalog
            .as_ref()
            .map_or_else(|| "main".to_owned(), |c| c.get_ref().clone());
        if let Some(c) = &raw.catalog
            && (catalog.is_empty() || catalog.contains('.'))
        {
            return Err(self.invalid(c, "catalog must be a name without dots".to_owned()));
        }
        let max_rows = match &raw.max_rows {
            None => 100,
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.invalid(n, "max_rows must be at least 1".to_owned()));
            }
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or(usize::MAX),
        };
        let max_bytes = raw.max_bytes.as_ref().map_or(4096, |s| {
            usize::try_from(s.get_ref().0).unwrap_or(usize::MAX)
        });
        Ok(FunctionCatalogConfig::Postgres(PostgresCatalog {
            url: url.clone(),
            password_env: raw.password_env.as_ref().map(|p| p.get_ref().clone()),
            role: raw.role.as_ref().map(|r| r.get_ref().clone()),
            schemas: schemas.clone(),
            statement_timeout: raw
                .statement_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            max_rows,
            max_bytes,
            catalog,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    const MODELS: &str = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n";

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{MODELS}{extra}"), Path::new("gw.toml"))
    }

    #[test]
    fn parses_a_postgres_catalog() {
        let c = load(
            "[[function_catalogs]]\nkind = \"postgres\"\nurl = \"postgres://tools@127.0.0.1:5432/test\"\nrole = \"tools_runner\"\nschemas = [\"public_tools\"]\nstatement_timeout = \"2s\"\nmax_rows = 50\nmax_bytes = \"8KiB\"\ncatalog = \"main\"\n",
        )
        .unwrap();
        let [FunctionCatalogConfig::Postgres(pg)] = c.function_catalogs() else {
            panic!("one catalog")
        };
        assert_eq!(pg.url(), "postgres://tools@127.0.0.1:5432/test");
        assert_eq!(pg.role(), Some("tools_runner"));
        assert_eq!(pg.schemas(), ["public_tools"]);
        assert_eq!(pg.statement_timeout(), Duration::from_secs(2));
        assert_eq!((pg.max_rows(), pg.max_bytes()), (50, 8192));
        assert_eq!(pg.catalog(), "main");
        assert!(load("").unwrap().function_catalogs().is_empty());
    }

    #[test]
    fn defaults_and_errors() {
        let c = load("[[function_catalogs]]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nschemas = [\"s\"]\n").unwrap();
        let [FunctionCatalogConfig::Postgres(pg)] = c.function_catalogs() else {
            panic!("one catalog")
        };
        assert_eq!(
            (
                pg.catalog(),
                pg.max_rows(),
                pg.max_bytes(),
                pg.statement_timeout()
            ),
            ("main", 100, 4096, Duration::from_secs(10))
        );
        let err = |extra: &str| load(extra).unwrap_err().to_string();
        assert!(
            err("[[function_catalogs]]\nkind = \"mysql\"\nurl = \"x\"\nschemas = [\"s\"]\n")
                .starts_with("gw.toml:5:8: unknown function catalog kind \"mysql\"")
        );
        assert!(err("[[function_catalogs]]\nkind = \"postgres\"\nurl = \"postgres://u:secret@h/db\"\nschemas = [\"s\"]\n")
            .contains("password_env"));
        assert!(err("[[function_catalogs]]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nschemas = []\n")
            .starts_with("gw.toml:7:11: schemas must list"));
        assert!(err("[[function_catalogs]]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nschemas = [\"s\"]\nmax_rowz = 1\n")
            .contains("unknown field `max_rowz`"));
    }
}
