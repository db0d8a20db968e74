use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
use tower::Service;

use super::store::{
    KeyInfo, NewKey, PgKeyStore, PgKeyStoreError, metadata_from_json, model_limits_from_json,
    positive,
};
use crate::auth::header::{Presented, presented_key};
use crate::auth::{KeyDigest, KeyRecord, parse_rfc3339};
use crate::error::{ApiError, ErrorType};
use crate::gateway::RouteBody;
use crate::rate_limit::{Budget, BudgetPeriod, ModelLimits};
use crate::route::BoxBody;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// The key-management endpoints over a [`PgKeyStore`], guarded by an admin key. Mount it with
/// [`Gateway::with_route`](crate::gateway::Gateway::with_route) at `/admin/keys` and
/// `/admin/keys/`. See the [module docs](crate::auth::postgres#admin-endpoints).
#[derive(Clone, Debug)]
pub struct AdminKeys {
    store: PgKeyStore,
    admin: KeyDigest,
}

impl AdminKeys {
    /// The endpoints over `store`, for callers presenting the key whose digest is `admin`.
    pub fn new(store: PgKeyStore, admin: KeyDigest) -> Self {
        Self { store, admin }
    }
}

type Res = Response<BoxBody>;

fn json_res(status: StatusCode, body: &Value) -> Res {
    let mut res = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error_res(e: ApiError) -> Res {
    e.into_response()
        .map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

fn bad_request(message: impl Into<String>) -> Res {
    error_res(ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorType::InvalidRequestError,
        message.into(),
        None,
        None,
    ))
}

fn not_found(id: &str) -> Res {
    error_res(ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorType::InvalidRequestError,
        format!("No key with the id {id:?}."),
        None,
        Some("key_not_found".into()),
    ))
}

fn store_error(e: &PgKeyStoreError) -> Res {
    if e.is_conflict() {
        return error_res(ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::InvalidRequestError,
            "A key with this id already exists.",
            Some("id".into()),
            Some("key_exists".into()),
        ));
    }
    let mut res = error_res(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::ServerError,
        "The key store is unavailable.",
        None,
        Some("service_unavailable".into()),
    ));
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

fn method_not_allowed(allow: &'static str) -> Res {
    let mut res = json_res(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"detail": "Method Not Allowed"}),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// What a create or patch body sets; `Some(None)` clears a value.
#[derive(Default)]
struct Fields {
    id: Option<String>,
    models: Option<Vec<String>>,
    rpm: Option<Option<u32>>,
    tpm: Option<Option<u64>>,
    max_concurrent: Option<Option<u32>>,
    model_limits: Option<Vec<ModelLimits>>,
    expires: Option<Option<SystemTime>>,
    metadata: Option<BTreeMap<String, String>>,
    disabled: Option<bool>,
    budget_tokens: Option<Option<u64>>,
    budget_usd: Option<Option<f64>>,
    budget_period: Option<Option<BudgetPeriod>>,
}

impl Fields {
    fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, String> {
        let value: Value = if body.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?
        };
        let Value::Object(obj) = value else {
            return Err("expected a JSON object".to_owned());
        };
        let mut out = Self::default();
        for (k, v) in &obj {
            if !allowed.contains(&k.as_str()) {
                return Err(format!("unknown field {k:?}"));
            }
            match k.as_str() {
                "id" => {
                    let id = v
                        .as_str()
                        .filter(|s| !s.is_empty() && s.len() <= 128)
                        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
                        .ok_or("id: expected 1 to 128 printable ASCII characters, no '/'")?;
                    out.id = Some(id.to_owned());
                }
                "models" => {
                    let models = v
                        .as_array()
                        .and_then(|a| {
                            a.iter()
                                .map(|m| m.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or("models: expected an array of non-empty strings")?;
                    out.models = Some(models);
                }
                "rpm" => out.rpm = Some(positive(Some(v), "rpm")?),
                "tpm" => out.tpm = Some(positive(Some(v), "tpm")?),
                "max_concurrent" => out.max_concurrent = Some(positive(Some(v), "max_concurrent")?),
                "model_limits" => out.model_limits = Some(model_limits_from_json(v)?),
                "expires" => {
                    out.expires = Some(match v {
                        Value::Null => None,
                        Value::String(s) => Some(parse_rfc3339(s)?),
                        _ => return Err("expires: expected an RFC 3339 string or null".to_owned()),
                    });
                }
                "metadata" => out.metadata = Some(metadata_from_json(v)?),
                "disabled" => {
                    out.disabled = Some(v.as_bool().ok_or("disabled: expected a boolean")?);
                }
                "budget_tokens" => out.budget_tokens = Some(positive(Some(v), "budget_tokens")?),
                "budget_usd" => {
                    out.budget_usd = Some(match v {
                        Value::Null => None,
                        v => Some(
                            v.as_f64()
                                .filter(|d| d.is_finite() && *d > 0.0)
                                .ok_or("budget_usd: expected a positive number or null")?,
                        ),
                    });
                }
                "budget_period" => {
                    out.budget_period = Some(match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.parse::<BudgetPeriod>()?),
                        _ => return Err("budget_period: expected a string or null".to_owned()),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn apply(self, r: &mut KeyRecord) {
        if let Some(v) = self.models {
            r.models = v;
        }
        if let Some(v) = self.rpm {
            r.limits.rpm = v;
        }
        if let Some(v) = self.tpm {
            r.limits.tpm = v;
        }
        if let Some(v) = self.max_concurrent {
            r.limits.max_concurrent = v;
        }
        if let Some(v) = self.model_limits {
            r.model_limits = v;
        }
        if let Some(v) = self.expires {
            r.expires_at = v;
        }
        if let Some(v) = self.metadata {
            r.metadata = v;
        }
        if let Some(v) = self.disabled {
            r.disabled = v;
        }
        if self.budget_tokens.is_some() || self.budget_usd.is_some() || self.budget_period.is_some()
        {
            let mut b = r.budget.unwrap_or(Budget::new(BudgetPeriod::Month));
            if let Some(v) = self.budget_tokens {
                b.tokens = v;
            }
            if let Some(v) = self.budget_usd {
                b.micro_usd = v.map(|d| Budget::new(b.period).usd(d).micro_usd.unwrap_or(0));
            }
            if let Some(v) = self.budget_period {
                b.period = v.unwrap_or(BudgetPeriod::Month);
            }
            r.budget = (!b.is_unlimited()).then_some(b);
        }
    }
}

const CREATE_FIELDS: &[&str] = &[
    "id",
    "models",
    "rpm",
    "tpm",
    "max_concurrent",
    "model_limits",
    "expires",
    "metadata",
    "budget_tokens",
    "budget_usd",
    "budget_period",
];
const PATCH_FIELDS: &[&str] = &[
    "models",
    "rpm",
    "tpm",
    "max_concurrent",
    "model_limits",
    "expires",
    "metadata",
    "disabled",
    "budget_tokens",
    "budget_usd",
    "budget_period",
];

async fn read_body(mut body: RouteBody) -> Result<Bytes, Res> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(bad_request("the request body could not be read"));
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(error_res(ApiError::request_too_large(MAX_BODY)));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

fn info_or_404(id: &str, r: Result<Option<KeyInfo>, PgKeyStoreError>) -> Res {
    match r {
        Ok(Some(info)) => json_res(StatusCode::OK, &info.to_json()),
        Ok(None) => not_found(id),
        Err(e) => store_error(&e),
    }
}

impl AdminKeys {
    async fn handle(self, req: Request<RouteBody>) -> Res {
        // The admin key is compared by digest: the presented key is hashed and the two digests
        // compared. A timing difference could at most reveal how many leading bytes of the
        // *digests* agree, which gives no way to construct a matching secret.
        let admitted = match presented_key(req.headers()) {
            Presented::Key(key) => KeyDigest::of(key) == self.admin,
            _ => false,
        };
        if !admitted {
            return error_res(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorType::InvalidRequestError,
                "An admin key is required (Authorization: Bearer ADMIN_KEY).",
                None,
                Some("invalid_api_key".into()),
            ));
        }
        let path = req.uri().path().to_owned();
        let rest = path
            .strip_prefix("/admin/keys")
            .unwrap_or("")
            .trim_end_matches('/');
        let method = req.method().clone();
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [] => match method {
                Method::GET | Method::HEAD => match self.store.list().await {
                    Ok(keys) => {
                        let data: Vec<Value> = keys.iter().map(KeyInfo::to_json).collect();
                        json_res(StatusCode::OK, &json!({"object": "list", "data": data}))
                    }
                    Err(e) => store_error(&e),
                },
                Method::POST => {
                    let body = match read_body(req.into_body()).await {
                        Ok(b) => b,
                        Err(res) => return res,
                    };
                    let fields = match Fields::parse(&body, CREATE_FIELDS) {
                        Ok(f) => f,
                        Err(e) => return bad_request(e),
                    };
                    let mut new = NewKey {
                        id: fields.id.clone(),
                        ..NewKey::default()
                    };
                    fields.apply(&mut new.record);
                    match self.store.create(new).await {
                        Ok((secret, info)) => {
                            let mut body = info.to_json();
                            // The only time the secret is shown.
                            body["key"] = Value::String(secret.expose().to_owned());
                            json_res(StatusCode::CREATED, &body)
                        }
                        Err(e) => store_error(&e),
                    }
                }
                _ => method_not_allowed("GET, HEAD, POST"),
            },
            [id] => match method {
                Method::GET | Method::HEAD => info_or_404(id, self.store.get(id).await),
                Method::DELETE => info_or_404(id, self.store.revoke(id).await),
                Method::PATCH => {
                    let id = (*id).to_owned();
                    let body = match read_body(req.into_body()).await {
                        Ok(b) => b,
                        Err(res) => return res,
                    };
                    let fields = match Fields::parse(&body, PATCH_FIELDS) {
                        Ok(f) => f,
                        Err(e) => return bad_request(e),
                    };
                    info_or_404(&id, self.store.update(&id, |r| fields.apply(r)).await)
                }
                _ => method_not_allowed("GET, HEAD, PATCH, DELETE"),
            },
            [id, "revoke"] => match method {
                Method::POST => info_or_404(id, self.store.revoke(id).await),
                _ => method_not_allowed("POST"),
            },
            _ => json_res(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"})),
        }
    }
}

/// Response future of [`AdminKeys`] (boxed: the admin endpoints are not a hot path).
pub type AdminFuture = Pin<Box<dyn Future<Output = Result<Res, Infallible>> + Send>>;

impl Service<Request<RouteBody>> for AdminKeys {
    type Response = Res;
    type Error = Infallible;
    type Future = AdminFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RouteBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}
