// The official openai Node SDK against the server (run by tests/chat/test_node_sdk.py):
// runTools() drives a tool-calling loop to its end, streamed or not; stream() assembles a
// completion with finalChatCompletion(). Prints what the test checks, as one JSON line.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY,
                            maxRetries: 0 });
const mode = process.argv[2];
const results = { get_weather: '{"celsius": 18, "sky": "clear"}', get_time: "14:05" };
const tool = (name, description) => ({
  type: "function",
  function: {
    name, description, parse: JSON.parse,
    function: async (args) => { calls.push([name, args]); return results[name]; },
    parameters: { type: "object", properties: { city: { type: "string" } } },
  },
});
const calls = [];
const messages = [{ role: "user", content: "Weather and time in Paris? [rounds:2]" }];

if (mode === "runTools" || mode === "runToolsStream") {
  const stream = mode === "runToolsStream";
  const runner = client.chat.completions.runTools({
    model: "gpt-4o-mini", messages,
    tools: [tool("get_weather", "The weather now"), tool("get_time", "The local time")],
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  });
  const content = await runner.finalContent();
  const completions = runner.allChatCompletions();
  console.log(JSON.stringify({
    content, calls,
    usages: completions.map((c) => c.usage),
    finish: completions.map((c) => c.choices[0].finish_reason),
    messages: runner.messages.length,
  }));
} else if (mode === "streamNoRole") {
  const stream = client.chat.completions.stream({
    model: "gpt-4o-mini", messages: [{ role: "user", content: "hi [norole]" }],
    stream_options: { include_usage: true },
  });
  const completion = await stream.finalChatCompletion();
  console.log(JSON.stringify({ content: completion.choices[0].message.content,
                               role: completion.choices[0].message.role,
                               usages: [completion.usage] }));
} else {
  throw new Error(`unknown mode ${mode}`);
}
