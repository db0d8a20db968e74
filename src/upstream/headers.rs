//! Header hygiene for forwarding: hop-by-hop headers out, the upstream's credential in.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies strip.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is hop-by-hop (including every `Proxy-*`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// Whether the `Connection` headers of `headers` name `name`.
fn named_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Copies `src` minus hop-by-hop headers and headers for which `drop` is true.
fn filtered(src: &HeaderMap, drop: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let has_connection = src.contains_key(header::CONNECTION);
    let mut out = HeaderMap::with_capacity(src.keys_len() + 3);
    for (name, value) in src {
        if is_hop_by_hop(name) || drop(name) || (has_connection && named_in_connection(src, name)) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The headers sent upstream: the client's end-to-end headers, without its `Authorization`,
/// `Host` (the upstream's comes from the URL), `Content-Length` (recomputed), `Expect`, and
/// `Accept-Encoding` (the gateway watches the SSE stream, so it must arrive uncompressed); with
/// `Content-Type: application/json`, the upstream's own `Authorization`, and `host` as `Host`
/// (else the client sets it from the URL).
pub(crate) fn request_headers(
    src: &HeaderMap,
    auth: Option<&HeaderValue>,
    host: Option<&HeaderValue>,
) -> HeaderMap {
    let mut out = filtered(src, |n| {
        n == header::AUTHORIZATION
            || n == header::HOST
            || n == header::CONTENT_LENGTH
            || n == header::EXPECT
            || n == header::ACCEPT_ENCODING
            || n == header::CONTENT_TYPE
    });
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(auth) = auth {
        out.insert(header::AUTHORIZATION, auth.clone());
    }
    if let Some(host) = host {
        out.insert(header::HOST, host.clone());
    }
    out
}

/// Strips hop-by-hop headers from an upstream response, in place.
pub(crate) fn strip_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|n| named_in_connection(headers, n))
            .cloned()
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for n in hop {
        headers.remove(n);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_cleaned() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("openai-organization", HeaderValue::from_static("org"));
        let auth = HeaderValue::from_static("Bearer upstream");
        let out = request_headers(&h, Some(&auth), None);
        assert_eq!(out.get(header::AUTHORIZATION), Some(&auth));
        assert_eq!(out.get(header::CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(out.get("openai-organization").unwrap(), "org");
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-authorization",
            "te",
            "accept-encoding",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        let out = request_headers(&h, None, None);
        assert!(!out.contains_key(header::AUTHORIZATION));
        assert!(!out.contains_key(header::HOST));
        h.insert(header::HOST, HeaderValue::from_static("gateway.example"));
        let host = HeaderValue::from_static("upstream:8000");
        let out = request_headers(&h, None, Some(&host));
        assert_eq!(out.get(header::HOST), Some(&host));
    }

    #[test]
    fn response_headers_are_cleaned() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-request-id", HeaderValue::from_static("r"));
        strip_response(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-request-id"));
    }
}
