// Conformance: the official `openai` Node client against a running chatgate proxy (the same
// checks as openai_client.py, through the other official SDK).
//
// usage: npm install --no-save --prefix tests/conformance openai@7
//        node tests/conformance/openai_client.mjs BASE_URL
// Prints one line per check and a closing 'N passed, N failed' line; exits 1 on any failure.
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = (process.argv[2] ?? "").replace(/\/+$/, "");
if (!base) {
  console.error("usage: node openai_client.mjs BASE_URL");
  process.exit(2);
}
const options = { apiKey: "unused", maxRetries: 0, timeout: 20_000 };
const client = new OpenAI({ ...options, baseURL: `${base}/v1` });
const alt = new OpenAI({ ...options, baseURL: `${base}/api/v1/compatibility/openai/v1` });
const user = (content) => [{ role: "user", content }];
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: {
        type: "object",
        properties: { city: { type: "string" } },
        required: ["city"],
      },
    },
  },
];

// Resolves to the error the call fails with; fails the check when it does not.
async function failure(call) {
  try {
    await call();
  } catch (e) {
    return e;
  }
  throw new Error("no error");
}

const checks = {
  async plain() {
    const r = await client.chat.completions.create({ model: "echo", messages: user("Hello there") });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices[0].message.content, "Hello there");
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.equal(r.usage.completion_tokens, 2);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 2);
  },

  async "mlflow path, n=2"() {
    const r = await alt.chat.completions.create({ model: "echo", messages: user("hi"), n: 2 });
    assert.deepEqual(
      r.choices.map((c) => c.message.content),
      ["hi", "hi"],
    );
  },

  async "stream with usage"() {
    const stream = await client.chat.completions.create({
      model: "echo",
      messages: user("one two three"),
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.equal(text, "one two three");
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 3);
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  },

  async "stream without usage"() {
    // The gateway meters every stream; a client that did not ask for usage sees no usage chunk.
    const stream = await client.chat.completions.create({
      model: "echo",
      messages: user("a b"),
      stream: true,
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.length > 0);
    assert.ok(
      chunks.every((c) => c.choices.length > 0 && !c.usage),
      JSON.stringify(chunks.at(-1)),
    );
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? "").join(""), "a b");
  },

  async max_tokens() {
    const r = await client.chat.completions.create({ model: "echo", messages: user("a b c d"), max_tokens: 2 });
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.choices[0].message.content, "a b");
  },

  async "tool call"() {
    const messages = user('call get_weather {"city":"Paris"}');
    const r = await client.chat.completions.create({ model: "echo", tools, messages });
    const call = r.choices[0].message.tool_calls[0];
    assert.equal(call.function.name, "get_weather");
    assert.equal(call.function.arguments, '{"city":"Paris"}');
    assert.equal(r.choices[0].finish_reason, "tool_calls");
    // Streamed, the SDK's accumulated fragments give the same call.
    const stream = client.chat.completions.stream({ model: "echo", tools, messages });
    const done = await stream.finalChatCompletion();
    assert.equal(done.choices[0].message.tool_calls[0].function.arguments, '{"city":"Paris"}');
  },

  async "unknown model, 404"() {
    const e = await failure(() => client.chat.completions.create({ model: "nope", messages: user("hi") }));
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.status, 404);
    assert.equal(e.code, "model_not_found");
  },

  async "invalid request, 422"() {
    const e = await failure(() => client.chat.completions.create({ model: "echo", messages: [] }));
    assert.ok(e instanceof OpenAI.UnprocessableEntityError, String(e));
    const detail = e.error.detail;
    assert.deepEqual(detail[0].loc, ["body", "messages"]);
    assert.equal(detail[0].type, "too_short");
  },

  async models() {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes("echo"), String(ids));
  },

  async "models.retrieve"() {
    const m = await client.models.retrieve("echo");
    assert.equal(m.id, "echo");
    assert.equal(m.object, "model");
    const e = await failure(() => client.models.retrieve("nope"));
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  },

  async max_completion_tokens() {
    const r = await client.chat.completions.create({
      model: "echo",
      messages: user("a b c d"),
      max_completion_tokens: 1,
    });
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.choices[0].message.content, "a");
  },

  async "agent loop"() {
    const messages = user('call get_weather {"city":"Paris"}');
    for (let i = 0; i < 5; i++) {
      const r = await client.chat.completions.create({ model: "echo", tools, messages });
      const msg = r.choices[0].message;
      if (!msg.tool_calls?.length) {
        assert.ok((msg.content ?? "").includes("sunny"), JSON.stringify(msg));
        return;
      }
      messages.push(msg);
      for (const call of msg.tool_calls) {
        messages.push({ role: "tool", tool_call_id: call.id, content: "sunny" });
      }
    }
    throw new Error("the loop did not end");
  },

  async "x-request-id"() {
    const { response } = await client.chat.completions
      .create({ model: "echo", messages: user("hi") }, { headers: { "x-request-id": "conf-node-1" } })
      .withResponse();
    assert.equal(response.headers.get("x-request-id"), "conf-node-1");
  },
};

let passed = 0;
let failed = 0;
for (const [name, check] of Object.entries(checks)) {
  try {
    await check();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e?.name}: ${e?.message}`);
  }
}
console.log(`openai-node: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
