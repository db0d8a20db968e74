//! Where an active health probe goes: its path, relative to the upstream's base URL.

/// The path and query a health probe of `path` requests on an upstream whose base URL has the
/// path `base`: `path` appended to `base`, then `.` and `..` segments resolved as in
/// RFC 3986 §5.2.4 (`..` never climbs above the root). A `path` without a leading `/` is read
/// as if it had one. The query of `path`, if any, is kept as written.
///
/// See [`HealthCheck`](crate::route::HealthCheck) for the rule as users see it.
pub(crate) fn probe_path(base: &str, path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let base = base.trim_end_matches('/');
    let joined = if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    };
    let segments: Vec<&str> = joined.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                // A trailing `.` or `..` names a directory: keep the final `/`.
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut resolved = format!("/{}", out.join("/"));
    if let Some(q) = query {
        resolved.push('?');
        resolved.push_str(q);
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::probe_path;

    #[test]
    fn the_path_is_relative_to_the_base_url() {
        assert_eq!(probe_path("/v1", "/models"), "/v1/models");
        assert_eq!(probe_path("/v1/", "/models"), "/v1/models");
        assert_eq!(probe_path("/openai/v1", "/models"), "/openai/v1/models");
        assert_eq!(probe_path("", "/models"), "/models");
        assert_eq!(probe_path("/", "/health"), "/health");
        assert_eq!(probe_path("/v1", "models"), "/v1/models");
        assert_eq!(probe_path("/v1", "/models?x=1"), "/v1/models?x=1");
    }

    #[test]
    fn dot_segments_reach_the_root() {
        assert_eq!(probe_path("/v1", "/../health"), "/health");
        assert_eq!(probe_path("/a/v1", "/../../health"), "/health");
        assert_eq!(probe_path("/a/v1", "/../health"), "/a/health");
        // `..` stops at the root.
        assert_eq!(probe_path("/v1", "/../../../health"), "/health");
        assert_eq!(probe_path("/v1", "/./models"), "/v1/models");
        assert_eq!(probe_path("/v1", "/.."), "/");
        assert_eq!(probe_path("/v1", "/../?ready"), "/?ready");
    }
}
