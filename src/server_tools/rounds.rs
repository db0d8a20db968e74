//! The loop: resolve the catalog tools, call the model, run what it calls, call it again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tower::{Service, ServiceExt};

use super::blocks::{self, Executed};
use super::catalog::{FunctionCatalog, tool_name};
use super::{ServerToolRounds, schema, stream};
use crate::BoxError;
use crate::contract::{
    ChatCompletion, Extra, FinishReason, FunctionDefinition, FunctionParams, Message,
    MessageContent, Tool, ToolCall, ToolType, Usage,
};
use crate::error::{ApiError, ErrorType};
use crate::route::BoxBody;
use crate::validate::ValidatedRequest;

/// The settings and catalogs shared by every request.
pub(super) struct Shared {
    pub(super) catalogs: Vec<Arc<dyn FunctionCatalog>>,
    pub(super) max_rounds: u32,
    pub(super) call_timeout: Duration,
    pub(super) max_answer_bytes: usize,
}

/// A catalog tool of one request.
struct Resolved {
    /// The catalog name.
    name: String,
    /// Which catalog has it.
    catalog: usize,
    /// Its parameter schema.
    parameters: Value,
}

pub(super) fn boxed<B>(res: Response<B>) -> Response<BoxBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

fn error(e: ApiError) -> Response<BoxBody> {
    boxed(e.into_response())
}

fn api(
    status: StatusCode,
    kind: ErrorType,
    message: String,
    param: Option<String>,
    code: &'static str,
) -> ApiError {
    ApiError::new(
        status,
        kind,
        message,
        param.map(Into::into),
        Some(code.into()),
    )
}

/// A copy of the request's head (the body is the next round's).
fn request(parts: &http::request::Parts, body: ValidatedRequest) -> Request<ValidatedRequest> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req
}

/// Replaces each `uc_function` tool by the function tool its catalog describes.
async fn resolve(
    shared: &Shared,
    body: &mut ValidatedRequest,
) -> Result<HashMap<String, Resolved>, ApiError> {
    let tools = body.request().tools.clone().unwrap_or_default();
    let mut resolved = HashMap::new();
    let mut out = Vec::with_capacity(tools.len());
    for (k, tool) in tools.into_iter().enumerate() {
        if tool.kind != ToolType::UcFunction {
            out.push(tool);
            continue;
        }
        let Some(uc) = &tool.uc_function else {
            return Err(ApiError::invalid_request(
                "A `uc_function` tool needs `uc_function` with the function's `name`.",
                format!("tools[{k}].uc_function"),
            ));
        };
        let mut found = None;
        let mut failure = None;
        for (i, catalog) in shared.catalogs.iter().enumerate() {
            match catalog.describe(&uc.name).await {
                Ok(Some(spec)) => {
                    found = Some((i, spec));
                    break;
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        let Some((catalog, spec)) = found else {
            if let Some(e) = failure {
                return Err(api(
                    StatusCode::BAD_GATEWAY,
                    ErrorType::ServerError,
                    format!(
                        "The function catalog could not be asked about `{}`: {e}",
                        uc.name
                    ),
                    None,
                    "function_catalog_unavailable",
                ));
            }
            return Err(api(
                StatusCode::BAD_REQUEST,
                ErrorType::InvalidRequestError,
                format!(
                    "The function `{}` does not exist in the function catalog.",
                    uc.name
                ),
                Some(format!("tools[{k}].uc_function.name")),
                "function_not_found",
            ));
        };
        let mut schema = spec.parameters.clone();
        if !schema.is_object() {
            schema = serde_json::json!({"type": "object"});
        }
        if let Some(o) = schema.as_object_mut() {
            o.entry("properties")
                .or_insert_with(|| serde_json::json!({}));
        }
        let parameters: FunctionParams = serde_json::from_value(schema.clone()).map_err(|e| {
            ApiError::internal(format!(
                "The catalog function `{}` has a parameter schema the contract cannot carry: {e}",
                spec.name
            ))
        })?;
        let name = tool_name(&uc.name);
        out.push(Tool {
            kind: ToolType::Function,
            function: Some(FunctionDefinition {
                name: name.clone(),
                description: spec.description.clone(),
                parameters: Some(parameters),
                strict: None,
                extra: Extra::default(),
            }),
            uc_function: None,
            extra: tool.extra.clone(),
        });
        resolved.insert(
            name,
            Resolved {
                name: uc.name.clone(),
                catalog,
                parameters: schema,
            },
        );
    }
    body.set_tools(Some(out));
    Ok(resolved)
}

/// Runs the catalog calls concurrently, each bounded by the call timeout. Every call gets a
/// result; what went wrong is the result's text.
async fn execute(
    shared: &Arc<Shared>,
    resolved: &HashMap<String, Resolved>,
    calls: &[ToolCall],
) -> Vec<Executed> {
    let mut out: Vec<Executed> = Vec::with_capacity(calls.len());
    let mut set = tokio::task::JoinSet::new();
    for call in calls {
        let name = call.function.name.as_deref().unwrap_or_default();
        let Some(r) = resolved.get(name) else {
            continue;
        };
        let i = out.len();
        let arguments = call.function.arguments.clone().unwrap_or_default();
        out.push(Executed {
            id: call.id.clone(),
            name: r.name.clone(),
            arguments: arguments.clone(),
            content: String::new(),
        });
        let text = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments.trim()
        };
        let args: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                out[i].content = format!("Error: the arguments are not valid JSON ({e}).");
                continue;
            }
        };
        if let Err(e) = schema::check(&r.parameters, &args) {
            out[i].content = format!("Error: {e}.");
            continue;
        }
        let catalog = Arc::clone(&shared.catalogs[r.catalog]);
        let function = r.name.clone();
        let timeout = shared.call_timeout;
        set.spawn(async move {
            let result = tokio::time::timeout(timeout, catalog.call(&function, args)).await;
            let content = match result {
                Ok(Ok(text)) => text,
                Ok(Err(e)) => format!("Error: {e}"),
                Err(_) => format!("Error: the function did not finish within {timeout:?}."),
            };
            (i, content)
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok((i, content)) = joined {
            out[i].content = content;
        }
    }
    for e in &mut out {
        if e.content.is_empty() {
            // Only a task that panicked leaves no result.
            e.content = "Error: the function failed.".to_owned();
        }
    }
    out
}

fn add(total: &mut Option<Usage>, u: Option<Usage>) {
    if let Some(u) = u {
        let t = total.get_or_insert_with(Usage::default);
        t.prompt_tokens += u.prompt_tokens;
        t.completion_tokens += u.completion_tokens;
        t.total_tokens += u.total_tokens;
    }
}

/// Serves one request that names catalog functions.
pub(super) async fn run<S, B>(
    mut inner: S,
    shared: Arc<Shared>,
    req: Request<ValidatedRequest>,
) -> Result<Response<BoxBody>, S::Error>
where
    S: Service<Request<ValidatedRequest>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, mut body) = req.into_parts();
    if body.request().choices() > 1 {
        return Ok(error(ApiError::invalid_request(
            "Server-side tools (`uc_function`) answer one choice: `n` must be 1.",
            "n",
        )));
    }
    let resolved = match resolve(&shared, &mut body).await {
        Ok(r) => r,
        Err(e) => return Ok(error(e)),
    };
    let stream = body.request().is_stream();
    let include_usage = body.request().include_usage();
    body.set_stream(false);

    let mut usage: Option<Usage> = None;
    let mut executed: Vec<Executed> = Vec::new();
    for round in 1..=shared.max_rounds {
        let res = (&mut inner).oneshot(request(&parts, body.clone())).await?;
        if !res.status().is_success() {
            // The model's own error, as it is.
            let mut res = boxed(res);
            res.extensions_mut().insert(ServerToolRounds(round));
            return Ok(res);
        }
        let (head, answer) = res.into_parts();
        let bytes = match Limited::new(answer, shared.max_answer_bytes)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                return Ok(error(ApiError::bad_gateway(format!(
                    "The model's answer could not be read: {e}"
                ))));
            }
        };
        let mut completion: ChatCompletion = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => {
                return Ok(error(ApiError::bad_gateway(format!(
                    "The model's answer is not a chat completion: {e}"
                ))));
            }
        };
        add(&mut usage, completion.usage);
        let Some(choice) = completion.choices.first() else {
            return Ok(error(ApiError::bad_gateway(
                "The model's answer has no choice.",
            )));
        };
        let (ours, theirs): (Vec<ToolCall>, Vec<ToolCall>) = choice
            .message
            .tool_calls
            .clone()
            .unwrap_or_default()
            .into_iter()
            .partition(|c| {
                c.function
                    .name
                    .as_deref()
                    .is_some_and(|n| resolved.contains_key(n))
            });
        if ours.is_empty() {
            return Ok(finish(
                completion,
                head,
                &executed,
                usage,
                round,
                stream,
                include_usage,
            ));
        }
        if round == shared.max_rounds && theirs.is_empty() {
            break;
        }
        let text = choice.message.content.clone().filter(|t| !t.is_empty());
        let results = execute(&shared, &resolved, &ours).await;
        if !theirs.is_empty() {
            // The client's tools are the client's to run: the answer goes back with them.
            executed.extend(results);
            if let Some(c) = completion.choices.first_mut() {
                c.message.tool_calls = Some(theirs);
                c.message.content = text;
                c.finish_reason = Some(FinishReason::ToolCalls);
            }
            return Ok(finish(
                completion,
                head,
                &executed,
                usage,
                round,
                stream,
                include_usage,
            ));
        }
        body.push_message(Message {
            role: "assistant".to_owned(),
            content: text.map(MessageContent::Text),
            tool_calls: Some(ours),
            ..Message::default()
        });
        for r in &results {
            body.push_message(Message {
                role: "tool".to_owned(),
                content: Some(MessageContent::Text(r.content.clone())),
                tool_call_id: Some(r.id.clone()),
                ..Message::default()
            });
        }
        executed.extend(results);
    }
    let mut res = error(api(
        StatusCode::BAD_GATEWAY,
        ErrorType::ServerError,
        format!(
            "The model was still calling catalog functions after {} rounds.",
            shared.max_rounds
        ),
        None,
        "server_tools_round_limit",
    ));
    res.extensions_mut()
        .insert(ServerToolRounds(shared.max_rounds));
    Ok(res)
}

/// The final response: what ran before the model's text, the usage of every round, as JSON or
/// as an event stream.
fn finish(
    mut completion: ChatCompletion,
    head: http::response::Parts,
    executed: &[Executed],
    usage: Option<Usage>,
    rounds: u32,
    stream: bool,
    include_usage: bool,
) -> Response<BoxBody> {
    if let Some(c) = completion.choices.first_mut() {
        c.message.content = blocks::prepend(executed, c.message.content.as_deref());
    }
    if usage.is_some() {
        completion.usage = usage;
    }
    let mut head = head;
    head.status = StatusCode::OK;
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.remove(header::TRANSFER_ENCODING);
    head.extensions.insert(ServerToolRounds(rounds));
    if stream {
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        head.headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        boxed(Response::from_parts(
            head,
            stream::events(&completion, include_usage),
        ))
    } else {
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let json = Bytes::from(serde_json::to_vec(&completion).unwrap_or_default());
        boxed(Response::from_parts(head, Full::new(json)))
    }
}
