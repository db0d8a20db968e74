//! Checks a model's arguments against a function's parameter schema (the subset the catalogs
//! produce: `properties` with `type`, `required`, `additionalProperties: false`).

use serde_json::Value;

/// `Ok` when `args` fits `schema`; else what is wrong, for the model to read.
pub(super) fn check(schema: &Value, args: &Value) -> Result<(), String> {
    let Some(args) = args.as_object() else {
        return Err(format!(
            "the arguments must be a JSON object, not {}",
            kind(args)
        ));
    };
    let empty = serde_json::Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !args.contains_key(name) {
                return Err(format!("the required parameter `{name}` is missing"));
            }
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, value) in args {
        let Some(property) = properties.get(name) else {
            if closed {
                return Err(format!("there is no parameter `{name}`"));
            }
            continue;
        };
        let allowed: Vec<&str> = match property.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        if !allowed.iter().any(|t| fits(t, value)) {
            return Err(format!(
                "the parameter `{name}` must be {}, not {}",
                allowed.join(" or "),
                kind(value)
            ));
        }
    }
    Ok(())
}

fn fits(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        // A type this checker does not know is left to the function.
        _ => true,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_required_types_and_unknown() {
        let s = json!({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":["string","null"]}},"required":["a"],"additionalProperties":false});
        assert_eq!(check(&s, &json!({"a":1})), Ok(()));
        assert_eq!(check(&s, &json!({"a":2.0,"b":null})), Ok(()));
        assert_eq!(
            check(&s, &json!({"b":"x"})),
            Err("the required parameter `a` is missing".into())
        );
        assert_eq!(
            check(&s, &json!({"a":"1"})),
            Err("the parameter `a` must be integer, not a string".into())
        );
        assert_eq!(
            check(&s, &json!({"a":1,"c":1})),
            Err("there is no parameter `c`".into())
        );
        assert_eq!(
            check(&s, &json!([1])),
            Err("the arguments must be a JSON object, not an array".into())
        );
        // Open schemas let unknown parameters through.
        assert_eq!(check(&json!({"properties":{}}), &json!({"z":1})), Ok(()));
    }
}
