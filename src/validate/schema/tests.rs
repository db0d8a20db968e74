//! Unit tests, one or more per validation rule.

use super::*;
use serde_json::json;

fn cfg() -> ValidateConfig {
    ValidateConfig::default()
}

fn run(body: &str) -> Result<Outcome, ValidationErrors> {
    validate_bytes(Bytes::from(body.to_owned()), true, &cfg())
}

fn errs(body: &str) -> Vec<(Value, &'static str, String)> {
    let e = run(body).expect_err("should fail");
    e.detail
        .into_iter()
        .map(|d| {
            (
                serde_json::to_value(&d.loc).expect("loc"),
                d.kind,
                d.msg.into_owned(),
            )
        })
        .collect()
}

fn one(body: &str) -> (Value, &'static str, String) {
    let mut e = errs(body);
    assert_eq!(e.len(), 1, "{e:?}");
    e.remove(0)
}

const MSG: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

#[test]
fn transport_level_errors() {
    let e = validate_bytes(Bytes::new(), true, &cfg()).expect_err("empty");
    assert_eq!(e.detail[0].kind, "missing");
    let (loc, kind, _) = one("null");
    assert_eq!((loc, kind), (json!(["body"]), "missing"));
    let (loc, kind, _) = one("[1,2]");
    assert_eq!((loc, kind), (json!(["body"]), "model_attributes_type"));
    let (loc, kind, msg) = one(r#"{"model":"m","messages":["#);
    assert_eq!(
        (loc, kind, msg.as_str()),
        (json!(["body", 25]), "json_invalid", "JSON decode error")
    );
    let e = validate_bytes(Bytes::from_static(b"{}"), false, &cfg()).expect_err("text/plain");
    assert_eq!(e.detail[0].kind, "model_attributes_type");
    let e =
        validate_bytes(Bytes::from_static(b"{\"a\":\"\xff\"}"), true, &cfg()).expect_err("utf8");
    assert_eq!(e.detail[0].kind, "json_invalid");
}

#[test]
fn json_invalid_carries_python_message_in_ctx() {
    let e = run(r#"{"model":"m" "messages":[]}"#).expect_err("bad");
    let d = &e.detail[0];
    assert_eq!(
        d.ctx.as_ref().expect("ctx")["error"],
        "Expecting ',' delimiter"
    );
    assert_eq!(d.input.get(), "{}");
}

#[test]
fn duplicate_keys_and_depth_are_json_invalid() {
    let body = format!(r#"{{"model":"a",{MSG},"model":"b"}}"#);
    let (loc, kind, _) = one(&body);
    assert_eq!(kind, "json_invalid");
    assert_eq!(
        loc,
        json!(["body", body.rfind(r#""model""#).expect("second key")])
    );
    let deep = format!(
        r#"{{"model":"m",{MSG},"x":{}1{}}}"#,
        "[".repeat(80),
        "]".repeat(80)
    );
    let (_, kind, _) = one(&deep);
    assert_eq!(kind, "json_invalid");
    // NaN is not JSON.
    let (_, kind, _) = one(&format!(r#"{{"model":"m",{MSG},"temperature":NaN}}"#));
    assert_eq!(kind, "json_invalid");
}

#[test]
fn required_fields() {
    let e = errs(r#"{}"#);
    let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
    assert_eq!(
        kinds,
        [
            (json!(["body", "model"]), "missing"),
            (json!(["body", "messages"]), "missing")
        ]
    );
    assert_eq!(e[0].2, "Field required");
    let (loc, kind, _) = one(r#"{"model":"m","messages":[{"content":"hi"}]}"#);
    assert_eq!(
        (loc, kind),
        (json!(["body", "messages", 0, "role"]), "missing")
    );
}

#[test]
fn all_violations_are_reported_in_field_order() {
    let e = errs(r#"{"model":1,"messages":[],"temperature":3,"n":0,"stop":[],"stream":"maybe"}"#);
    let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
    assert_eq!(
        kinds,
        [
            (json!(["body", "temperature"]), "less_than_equal"),
            (json!(["body", "n"]), "greater_than_equal"),
            (json!(["body", "stop"]), "too_short"),
            (json!(["body", "stream"]), "bool_parsing"),
            (json!(["body", "model"]), "string_type"),
            (json!(["body", "messages"]), "too_short"),
        ]
    );
}

#[test]
fn messages_and_ctx() {
    let e = run(r#"{"model":"m","messages":[]}"#).expect_err("empty");
    let d = &e.detail[0];
    assert_eq!(
        d.msg,
        "List should have at least 1 item after validation, not 0"
    );
    assert_eq!(
        serde_json::to_value(d.ctx.as_ref().expect("ctx")).expect("ctx"),
        json!({"field_type":"List","min_length":1,"actual_length":0})
    );
    let e = run(&format!(r#"{{"model":"m",{MSG},"temperature":2.5}}"#)).expect_err("le");
    assert_eq!(e.detail[0].msg, "Input should be less than or equal to 2");
    assert_eq!(e.detail[0].ctx.as_ref().expect("ctx")["le"], json!(2.0));
    assert_eq!(e.detail[0].input.get(), "2.5");
    let e = run(&format!(r#"{{"model":"m",{MSG},"n":0}}"#)).expect_err("ge");
    assert_eq!(
        e.detail[0].msg,
        "Input should be greater than or equal to 1"
    );
    assert_eq!(e.detail[0].ctx.as_ref().expect("ctx")["ge"], json!(1));
    let e = run(&format!(
        r#"{{"model":"m",{MSG},"tools":[{{"type":"x"}}]}}"#
    ))
    .expect_err("lit");
    assert_eq!(
        e.detail[0].msg,
        "Input should be 'function' or 'uc_function'"
    );
}

#[test]
fn scalar_type_errors() {
    for (field, value, kind) in [
        ("temperature", r#""hot""#, "float_parsing"),
        ("temperature", "[1]", "float_type"),
        ("n", "1.5", "int_from_float"),
        ("n", r#""two""#, "int_parsing"),
        ("n", "{}", "int_type"),
        ("max_tokens", "0", "greater_than_equal"),
        ("seed", r#""abc""#, "int_parsing"),
        ("stream", "2", "bool_parsing"),
        ("stream", "[]", "bool_type"),
        ("stream_options", "true", "dict_type"),
        ("stop", r#""END""#, "list_type"),
    ] {
        let (loc, k, _) = one(&format!(r#"{{"model":"m",{MSG},"{field}":{value}}}"#));
        assert_eq!((loc, k), (json!(["body", field]), kind), "{field}={value}");
    }
}

#[test]
fn coercions_are_patched_into_the_forwarded_body() {
    let body = format!(
        r#"{{"model":"m",{MSG},"n":"2","temperature":"0.5","stream":"no","max_tokens":8.0,"seed":"7"}}"#
    );
    let out = run(&body).expect("valid");
    assert_eq!(out.request.n, Some(2));
    assert_eq!(out.request.temperature, Some(0.5));
    assert_eq!(out.request.stream, Some(false));
    assert_eq!(out.request.max_tokens, Some(8));
    assert_eq!(out.request.seed, Some(7));
    let fwd: Value = serde_json::from_slice(&out.body()).expect("forwarded JSON");
    assert_eq!(fwd["n"], json!(2));
    assert_eq!(fwd["temperature"], json!(0.5));
    assert_eq!(fwd["stream"], json!(false));
    assert_eq!(fwd["max_tokens"], json!(8));
    assert_eq!(fwd["seed"], json!(7));
    let out = run(&format!(r#"{{"model":"m",{MSG},"temperature":true}}"#)).expect("bool");
    assert_eq!(out.request.temperature, Some(1.0));
}

#[test]
fn defaults_are_written_in_and_switchable() {
    let body = format!(r#"{{"model":"m",{MSG}}}"#);
    let out = run(&body).expect("valid");
    assert_eq!(
        &out.body()[..],
        format!(r#"{{"model":"m",{MSG},"temperature":0.0,"n":1}}"#).as_bytes()
    );
    assert_eq!(
        (out.request.temperature, out.request.n),
        (Some(0.0), Some(1))
    );
    let off = ValidateConfig {
        apply_defaults: false,
        ..cfg()
    };
    let raw = Bytes::from(format!(r#"{{ "model" : "m", {MSG}, "top_p": 0.5 }}"#));
    let out = validate_bytes(raw.clone(), true, &off).expect("valid");
    // Nothing changed: the very same bytes go on.
    assert_eq!(out.body(), raw);
    assert_eq!(out.body().as_ptr(), raw.as_ptr());
    assert_eq!(out.request.temperature, None);
}

#[test]
fn unknown_members_are_kept_at_every_level() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"bob"}],"top_p":0.5,
        "tools":[{"type":"function","function":{"name":"f","x-extra":1},"cache":true}]}"#;
    let out = run(body).expect("valid");
    assert_eq!(out.request.extra.get("top_p").map(|r| r.get()), Some("0.5"));
    assert_eq!(
        out.request.messages[0].extra.get("name").map(|r| r.get()),
        Some(r#""bob""#)
    );
    let tool = &out.request.tools.as_ref().expect("tools")[0];
    assert!(tool.extra.get("cache").is_some());
    assert!(
        tool.function
            .as_ref()
            .expect("f")
            .extra
            .get("x-extra")
            .is_some()
    );
    // Re-serializing the typed request keeps them too.
    let again: Value = serde_json::to_value(&out.request).expect("serialize");
    assert_eq!(again["messages"][0]["name"], "bob");
    assert_eq!(again["tools"][0]["function"]["x-extra"], 1);
    let fwd: Value = serde_json::from_slice(&out.body()).expect("json");
    assert_eq!(fwd["messages"][0]["name"], "bob");
}

#[test]
fn content_union_reports_both_branches() {
    let e = errs(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#);
    let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
    assert_eq!(
        kinds,
        [
            (
                json!(["body", "messages", 0, "content", "str"]),
                "string_type"
            ),
            (
                json!([
                    "body",
                    "messages",
                    0,
                    "content",
                    CONTENT_LIST,
                    0,
                    "image_url",
                    "image_url"
                ]),
                "missing"
            ),
        ]
    );
    let out = run(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{"data":"x","format":"mp3"}}]}]}"#)
        .expect("parts");
    assert_eq!(out.request.messages[0].text(), "a");
    let e = errs(r#"{"model":"m","messages":[{"role":"user","content":["x"]}]}"#);
    assert_eq!(
        e[1].0,
        json!(["body", "messages", 0, "content", CONTENT_LIST, 0])
    );
    assert_eq!(e[1].1, "model_attributes_type");
}

#[test]
fn tools_and_tool_choice() {
    let e = errs(&format!(
        r#"{{"model":"m",{MSG},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"properties":{{"x":{{"type":["string","bogus"]}}}}}}}}}}]}}"#
    ));
    assert_eq!((e[0].1, e[1].1), ("literal_error", "literal_error"));
    assert_eq!(e[0].0[6], json!("x"));
    assert_eq!(e[1].0[9], json!(1), "the bad list item is named");
    let out = run(&format!(
        r#"{{"model":"m",{MSG},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"properties":{{"x":{{"type":["string","null"],"enum":["a",1,2.5,true],"items":{{"type":"integer"}}}}}}}}}}}}],"tool_choice":"required"}}"#
    ))
    .expect("valid");
    let tools = out.request.tools.expect("tools");
    let params = tools[0]
        .function
        .as_ref()
        .expect("f")
        .parameters
        .as_ref()
        .expect("p");
    assert_eq!(params.properties[0].0, "x");
    assert_eq!(
        out.request.tool_choice,
        Some(ToolChoice::Mode(ToolChoiceMode::Required))
    );
    let e = errs(&format!(
        r#"{{"model":"m",{MSG},"tool_choice":{{"type":"other","function":{{"name":"f"}}}}}}"#
    ));
    let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
    assert_eq!(
        kinds,
        [
            (
                json!(["body", "tool_choice", CHOICE_LITERAL]),
                "literal_error"
            ),
            (
                json!(["body", "tool_choice", "ToolChoice", "type"]),
                "literal_error"
            ),
        ]
    );
    let e = errs(&format!(
        r#"{{"model":"m",{MSG},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"properties":{{"x":{{"enum":[null]}}}}}}}}}}]}}"#
    ));
    let kinds: Vec<_> = e.iter().map(|(_, k, _)| *k).collect();
    assert_eq!(
        kinds,
        ["string_type", "int_type", "float_type", "bool_type"]
    );
    assert_eq!(e[0].0.as_array().expect("loc").last(), Some(&json!("str")));
}

#[test]
fn null_temperature_and_n_are_type_errors() {
    // MLflow gives both a default but does not make them nullable.
    let e = errs(&format!(
        r#"{{"model":"m",{MSG},"temperature":null,"n":null}}"#
    ));
    assert_eq!(
        e,
        [
            (
                json!(["body", "temperature"]),
                "float_type",
                "Input should be a valid number".to_owned()
            ),
            (
                json!(["body", "n"]),
                "int_type",
                "Input should be a valid integer".to_owned()
            ),
        ]
    );
    let off = ValidateConfig {
        apply_defaults: false,
        ..cfg()
    };
    let body = Bytes::from(format!(r#"{{"model":"m",{MSG},"n":null}}"#));
    let e = validate_bytes(body, true, &off).expect_err("null n without defaults");
    assert_eq!(e.detail[0].kind, "int_type");
}

#[test]
fn null_is_absent_for_other_optional_fields() {
    let body = r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":null,
        "refusal":null,"tool_call_id":null}],"stop":null,"max_tokens":null,"stream":null,
        "stream_options":null,"tools":null,"seed":null,"tool_choice":null}"#;
    let out = run(body).expect("nulls are absent");
    let r = &out.request;
    assert_eq!(r.stop, None);
    assert_eq!((r.max_tokens, r.stream, r.seed), (None, None, None));
    assert!(r.stream_options.is_none() && r.tools.is_none() && r.tool_choice.is_none());
    assert!(r.messages[0].content.is_none() && r.messages[0].tool_calls.is_none());
    // Required fields: null is a type error.
    for (body, loc, kind) in [
        (
            format!(r#"{{"model":null,{MSG}}}"#),
            json!(["body", "model"]),
            "string_type",
        ),
        (
            r#"{"model":"m","messages":null}"#.to_owned(),
            json!(["body", "messages"]),
            "list_type",
        ),
        (
            r#"{"model":"m","messages":[{"role":null}]}"#.to_owned(),
            json!(["body", "messages", 0, "role"]),
            "string_type",
        ),
    ] {
        let (l, k, _) = one(&body);
        assert_eq!((l, k), (loc, kind), "{body}");
    }
}

fn with_usage(value: &str) -> String {
    format!(
        r#"{{"model":"m",{MSG},"stream":true,"stream_options":{{"include_usage":{value},"x":1}}}}"#
    )
}

#[test]
fn include_usage_is_a_lax_boolean_and_forwarded_coerced() {
    for (value, want) in [
        ("true", true),
        ("false", false),
        ("1", true),
        ("0", false),
        ("1.0", true),
        ("0.0", false),
        (r#""yes""#, true),
        (r#""off""#, false),
        (r#""T""#, true),
        (r#""0""#, false),
    ] {
        let out = run(&with_usage(value)).expect(value);
        let so = out.request.stream_options.as_ref().expect("stream_options");
        assert_eq!(so.include_usage, Some(want), "{value}");
        assert_eq!(out.request.include_usage(), want);
        assert!(so.extra.get("include_usage").is_none(), "{value}");
        assert_eq!(so.extra.get("x").map(|r| r.get()), Some("1"));
        let fwd: Value = serde_json::from_slice(&out.body()).expect("forwarded JSON");
        assert_eq!(
            fwd["stream_options"],
            json!({"include_usage": want, "x": 1}),
            "{value}"
        );
    }
    // null is absent; other keys stay free.
    let out = run(&with_usage("null")).expect("null");
    let so = out.request.stream_options.as_ref().expect("stream_options");
    assert_eq!(so.include_usage, None);
    assert!(!out.request.include_usage());
    let out = run(&with_usage(r#"true,"include_obfuscation":"whatever""#)).expect("free");
    assert!(out.request.include_usage());
}

#[test]
fn include_usage_errors_are_bool_parsing_or_bool_type() {
    for (value, kind) in [
        (r#""maybe""#, "bool_parsing"),
        (r#""""#, "bool_parsing"),
        ("2", "bool_parsing"),
        ("-1", "bool_parsing"),
        ("2.0", "bool_parsing"),
        ("1.5", "bool_type"),
        ("[]", "bool_type"),
        ("{}", "bool_type"),
    ] {
        let (loc, k, msg) = one(&with_usage(value));
        assert_eq!(
            (loc, k),
            (json!(["body", "stream_options", "include_usage"]), kind),
            "{value}"
        );
        let want = if kind == "bool_type" {
            "Input should be a valid boolean"
        } else {
            "Input should be a valid boolean, unable to interpret input"
        };
        assert_eq!(msg, want);
    }
    // The same rule for `stream`: a fractional number is not a boolean at all.
    let (_, k, _) = one(&format!(r#"{{"model":"m",{MSG},"stream":1.5}}"#));
    assert_eq!(k, "bool_type");
}

#[test]
fn tool_call_function_is_required_but_its_members_are_optional() {
    let body = r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[
        {"id":"a","function":{}},
        {"id":"b","function":{"name":"f","arguments":null}},
        {"id":"c","function":{"arguments":"{}"}}]}]}"#;
    let out = run(body).expect("name and arguments are optional");
    let again = serde_json::to_value(&out.request).expect("serialize");
    let calls = &again["messages"][0]["tool_calls"];
    // Absent (or null) stays absent when re-serialised.
    assert_eq!(calls[0]["function"], json!({}));
    assert_eq!(calls[1]["function"], json!({"name": "f"}));
    assert_eq!(calls[2]["function"], json!({"arguments": "{}"}));
    let e = errs(
        r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a"},
        {"id":"b","function":{"name":1,"arguments":{"a":1}}}]}]}"#,
    );
    let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
    assert_eq!(
        kinds,
        [
            (
                json!(["body", "messages", 0, "tool_calls", 0, "function"]),
                "missing"
            ),
            (
                json!(["body", "messages", 0, "tool_calls", 1, "function", "name"]),
                "string_type"
            ),
            (
                json!([
                    "body",
                    "messages",
                    0,
                    "tool_calls",
                    1,
                    "function",
                    "arguments"
                ]),
                "string_type"
            ),
        ]
    );
}

#[test]
fn a_utf8_bom_is_skipped_and_not_forwarded() {
    let plain = format!(r#"{{"model":"m",{MSG}}}"#);
    let with_bom = format!("\u{feff}{plain}");
    let out = run(&with_bom).expect("a BOM is fine");
    assert_eq!(
        &out.body()[..],
        format!(r#"{{"model":"m",{MSG},"temperature":0.0,"n":1}}"#).as_bytes()
    );
    // Nothing patched: the client's bytes from just after the mark.
    let off = ValidateConfig {
        apply_defaults: false,
        ..cfg()
    };
    let out = validate_bytes(Bytes::from(with_bom), true, &off).expect("valid");
    assert_eq!(&out.body()[..], plain.as_bytes());
    // Offsets of JSON errors count from after the mark, as Python's json.loads(bytes) does.
    let (loc, kind, _) = one("\u{feff}{\"model\":\"m\",\"messages\":[");
    assert_eq!((loc, kind), (json!(["body", 25]), "json_invalid"));
    // The mark alone is not an empty body, and only one mark is skipped.
    for body in ["\u{feff}", "\u{feff}\u{feff}{}"] {
        let e = run(body).expect_err(body);
        let d = &e.detail[0];
        assert_eq!(
            (serde_json::to_value(&d.loc).expect("loc"), d.kind),
            (json!(["body", 0]), "json_invalid"),
            "{body:?}"
        );
        assert_eq!(d.ctx.as_ref().expect("ctx")["error"], "Expecting value");
    }
}
