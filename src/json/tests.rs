use super::*;

fn err(s: &str) -> (String, usize) {
    let e = parse(s, 64).expect_err("should fail");
    (e.msg.into_owned(), e.char_offset)
}

#[test]
fn python_messages_and_offsets() {
    assert_eq!(
        err(r#"{"model":"m","messages":["#),
        ("Expecting value".into(), 25)
    );
    assert_eq!(err(""), ("Expecting value".into(), 0));
    assert_eq!(
        err("{"),
        (
            "Expecting property name enclosed in double quotes".into(),
            1
        )
    );
    assert_eq!(err(r#"{"a" 1}"#), ("Expecting ':' delimiter".into(), 5));
    assert_eq!(
        err(r#"{"a":1 "b":2}"#),
        ("Expecting ',' delimiter".into(), 7)
    );
    assert_eq!(err(r#"[1 2]"#), ("Expecting ',' delimiter".into(), 3));
    assert_eq!(err(r#"{"a":1}x"#), ("Extra data".into(), 7));
    assert_eq!(
        err(r#""abc"#),
        ("Unterminated string starting at".into(), 0)
    );
    assert_eq!(err("\"a\nb\""), ("Invalid control character at".into(), 2));
    assert_eq!(err("NaN"), ("Expecting value".into(), 0));
    assert_eq!(err("[-Infinity]"), ("Expecting value".into(), 1));
    assert_eq!(err("[01]"), ("Expecting ',' delimiter".into(), 2));
    assert_eq!(err("[1.]"), ("Expecting ',' delimiter".into(), 2));
    // Offsets count characters, not bytes.
    assert_eq!(err("[\"é\" 1]"), ("Expecting ',' delimiter".into(), 5));
}

#[test]
fn duplicate_keys_are_found_even_when_escaped() {
    let (msg, at) = err(r#"{"model":"a","model":"b"}"#);
    assert!(msg.contains("model"), "{msg}");
    assert_eq!(at, 13);
    let (_, at) = err(r#"{"a":1,"\u0061":2}"#);
    assert_eq!(at, 7);
    // Same key in different objects is fine.
    assert!(parse(r#"{"a":{"a":1},"b":{"a":2}}"#, 64).is_ok());
}

#[test]
fn depth_is_capped() {
    let deep = "[".repeat(10) + &"]".repeat(10);
    assert!(parse(&deep, 10).is_ok());
    let (msg, at) = err(&("[".repeat(65) + &"]".repeat(65)));
    assert!(msg.contains("depth"), "{msg}");
    assert_eq!(at, 64);
}

#[test]
fn arena_navigation() {
    let d = parse(r#" {"a": [1, {"b": null}, "x\"y"], "c": true} "#, 64).expect("valid");
    let members: Vec<_> = d.members(0).map(|(k, _)| d.str(k).into_owned()).collect();
    assert_eq!(members, ["a", "c"]);
    let (_, arr) = d.members(0).next().expect("a");
    let items: Vec<_> = d.items(arr).map(|i| d.raw(i)).collect();
    assert_eq!(items, ["1", r#"{"b": null}"#, r#""x\"y""#]);
    assert_eq!(d.str(d.items(arr).nth(2).expect("x")), "x\"y");
}

#[test]
fn unescape_handles_surrogates() {
    assert_eq!(unescape(r"\ud83d\ude00"), "😀");
    assert_eq!(unescape(r"a\ud800b"), "a\u{FFFD}b");
    assert_eq!(unescape(r"\n\t\/\\"), "\n\t/\\");
}

#[test]
fn agrees_with_serde_json_on_acceptance() {
    let cases = [
        "0",
        "-0",
        "1e5",
        "1E+5",
        "-1.5e-3",
        "[]",
        "{}",
        r#"{"a":[1,2,{"b":"c"}]}"#,
        "tru",
        "[1,]",
        "{\"a\":1,}",
        "\"\\x\"",
        "1e",
        "--1",
        "[\"\\u12\"]",
        " \"\u{7f}\" ",
    ];
    for c in cases {
        let ours = parse(c, 64).is_ok();
        let theirs = serde_json::from_str::<serde_json::Value>(c).is_ok();
        // "1e" is "1" then "e": extra data for both.
        assert_eq!(ours, theirs, "{c}");
    }
}

/// Our tree as a `serde_json::Value`, for comparison.
fn to_value(d: &Doc<'_>, i: usize) -> serde_json::Value {
    match d.node(i).kind {
        Kind::Null => serde_json::Value::Null,
        Kind::Bool(b) => serde_json::Value::Bool(b),
        Kind::Number => serde_json::from_str(d.raw(i)).expect("number"),
        Kind::String(_) => serde_json::Value::String(d.str(i).into_owned()),
        Kind::Array => d.items(i).map(|c| to_value(d, c)).collect(),
        Kind::Object => d
            .members(i)
            .map(|(k, v)| (d.str(k).into_owned(), to_value(d, v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// Mutated documents: we accept exactly what serde_json accepts (but duplicate keys, lone
/// surrogates and out-of-range numbers, as Python), and decode to the same values.
#[test]
fn differential_against_serde_json_on_mutations() {
    let seeds = [
        r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9\"llo\n"}],"n":2,"t":-1.5e3}"#,
        r#"[true,false,null,0,-0.0,12345678901234567890,"\ud83d\ude00",{"a":{"b":[]}}]"#,
        r#"{"k":"v","x":[1,2,{"y":"z\\w"}],"e":{}}"#,
    ];
    let alphabet = b"{}[]\",:0123456789-+.eEtruefalsn \\/u\t\nab\x01";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut compared = 0;
    for _ in 0..20_000 {
        let seed = seeds[(next() % seeds.len() as u64) as usize].as_bytes();
        let mut doc = seed.to_vec();
        for _ in 0..(1 + next() % 3) {
            let at = (next() % (doc.len() as u64 + 1)) as usize;
            let c = alphabet[(next() % alphabet.len() as u64) as usize];
            match next() % 3 {
                0 if at < doc.len() => doc[at] = c,
                1 if at < doc.len() => {
                    doc.remove(at);
                }
                _ => doc.insert(at, c),
            }
        }
        let Ok(text) = std::str::from_utf8(&doc) else {
            continue;
        };
        let theirs = serde_json::from_str::<serde_json::Value>(text);
        match parse(text, 64) {
            Ok(d) => {
                let v = theirs.unwrap_or_else(|e| {
                    // Python accepts these too: lone surrogates, and huge exponents as inf.
                    let why = e.to_string();
                    assert!(
                        why.contains("surrogate")
                            || why.contains("hex escape")
                            || why.contains("out of range"),
                        "we accept {text:?}, serde_json: {e}"
                    );
                    serde_json::Value::Null
                });
                if !v.is_null() || text.trim() == "null" {
                    assert_eq!(to_value(&d, 0), v, "{text:?}");
                    compared += 1;
                }
            }
            Err(e) => {
                if theirs.is_ok() {
                    assert!(
                        e.msg.contains("Duplicate"),
                        "we reject {text:?} ({}), serde_json accepts",
                        e.msg
                    );
                }
            }
        }
    }
    assert!(compared > 1000, "too few accepted mutations: {compared}");
}

#[test]
fn huge_objects_are_checked_for_duplicates_in_linear_time() {
    let n = 50_000;
    let mut doc = String::from("{");
    for k in 0..n {
        doc.push_str(&format!("\"k{k}\":{k},"));
    }
    doc.push_str("\"k\\u0031\":0}");
    // `"k\u0031"` is `"k1"`, key 2 of 50,001.
    let e = parse(&doc, 64).expect_err("duplicate");
    assert!(e.msg.contains("k1"), "{}", e.msg);
    assert_eq!(e.char_offset, doc.rfind("\"k\\u0031\"").expect("key"));
    doc.replace_range(doc.len() - 12.., "\"last\":0}");
    assert!(parse(&doc, 64).is_ok());
}
