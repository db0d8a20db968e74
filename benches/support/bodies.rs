//! Request bodies shared by the benchmarks (included with `#[path]`).

use serde_json::{Value, json};

/// ~4 KB: a multi-turn conversation with two function tools and tool calls.
pub(crate) fn typical_request() -> Value {
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city, in metric units.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["c", "f"], "description": "Temperature unit"}},
                "required": ["city"], "additionalProperties": false}, "strict": true}},
        {"type": "function", "function": {"name": "search_docs", "description": "Search the product documentation.",
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string", "description": "Free text query"},
                "limit": {"type": "integer", "description": "Maximum results"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Filter by tags"}},
                "required": ["query"]}}}
    ]);
    let mut messages = vec![
        json!({"role": "system", "content": "You are a support agent for a weather service. Use the tools when they help; be concise and cite the documentation when you quote it."}),
    ];
    for i in 0..6 {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what is the weather in Paris today, and how do I change the unit of temperature in the app settings? I tried the menu but could not find it.")}));
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("call_{i}"), "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "{\"temp\": 18, \"sky\": \"cloudy\"}"}));
        messages.push(json!({"role": "assistant", "content": "It is 18 °C and cloudy in Paris. To change the unit, open Settings → Display → Units."}));
    }
    json!({
        "model": "gpt-4o", "messages": messages, "tools": tools, "tool_choice": "auto",
        "temperature": 0.2, "stream": true, "stream_options": {"include_usage": true}, "user": "u-123"
    })
}
