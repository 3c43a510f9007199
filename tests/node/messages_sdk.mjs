// The official TypeScript/JavaScript SDK (@anthropic-ai/sdk, pinned in package.json) against
// a running aiogw: messages.create, messages.stream with tools, countTokens and an error.
// Usage: node tests/node/messages_sdk.mjs <gateway base URL> <model>
// Prints one JSON object with what the SDK returned; the Python test asserts on it.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, model] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey: "client-key", maxRetries: 0, timeout: 20000 });
const messages = [{ role: "user", content: "Weather in Paris?" }];
const tools = [
  {
    name: "get_weather",
    description: "Weather by city",
    input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
];

const text = (m) => m.content.filter((b) => b.type === "text").map((b) => b.text).join("");
const calls = (m) => m.content.filter((b) => b.type === "tool_use").map((b) => [b.id, b.name, b.input]);

const created = await client.messages.create({ model, max_tokens: 100, messages });
const stream = client.messages.stream({ model, max_tokens: 200, messages, tools, tool_choice: { type: "any" } });
const events = [];
stream.on("streamEvent", (e) => events.push(e.type));
const streamed = await stream.finalMessage();
const counted = await client.messages.countTokens({ model, messages, tools });
let error = null;
try {
  await client.messages.create({ model: "no-such-model", max_tokens: 10, messages });
} catch (e) {
  error = { notFound: e instanceof Anthropic.NotFoundError, status: e.status, type: e.error?.error?.type };
}
console.log(
  JSON.stringify({
    created: { id: created.id, text: text(created), stop: created.stop_reason, output: created.usage.output_tokens },
    streamed: { calls: calls(streamed), stop: streamed.stop_reason, first: events[0], last: events.at(-1) },
    counted: counted.input_tokens,
    error,
  }),
);
