// The official `openai` Node SDK against aiogw's POST /v1/responses (run by
// tests/integration/test_responses.py::test_node_sdk with the gateway's URL and a model).
// Prints what it got as one JSON line; any failed check exits non-zero.
import assert from "node:assert/strict";
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
// finalResponse() of this SDK version leaves out the output_text convenience: joined here.
const text = (r) => r.output.filter((o) => o.type === "message")
  .flatMap((m) => m.content).filter((c) => c.type === "output_text").map((c) => c.text).join("");
const client = new OpenAI({ baseURL, apiKey: "client", maxRetries: 0, timeout: 20000 });

const created = await client.responses.create({ model, instructions: "Be brief.", input: "Weather in Paris?" });
assert.match(created.id, /^resp_/);
assert.equal(created.status, "completed");
assert.ok(created.output_text.length > 0);

const stream = client.responses.stream({ model, instructions: "Be brief.", input: "Weather in Paris?" });
const types = [];
for await (const event of stream) types.push(event.type);
const streamed = await stream.finalResponse();
assert.equal(types[0], "response.created");
assert.equal(types.at(-1), "response.completed");
assert.equal(text(streamed), created.output_text);

const tools = [{ type: "function", name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } }];
const question = [{ role: "user", content: "Weather in Paris?" }];
const first = await client.responses.create({ model, input: question, tools });
const call = first.output.find((o) => o.type === "function_call");
assert.ok(call && call.call_id && call.name === "get_weather");
const second = await client.responses.create({
  model, tools,
  input: [...question, call, { type: "function_call_output", call_id: call.call_id, output: "Sunny" }],
});
assert.ok(second.output_text.length > 0);

console.log(JSON.stringify({ text: created.output_text, types, call: { name: call.name, arguments: call.arguments } }));
