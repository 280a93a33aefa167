// A whole chat-history flow through a client generated from the server's OpenAPI document
// (openapi-typescript) and openapi-fetch: no casts, no `any`. tests/test_typescript_client.py
// generates schema.d.ts next to this file, compiles it with `tsc --strict` and runs it against
// a real `chathistory serve`. It throws (exit status 1) on the first surprise, and prints a
// JSON summary as its last line. The `openai` SDK's own types check both directions: the
// context window is Chat Completions input, and a message the SDK returns is an append.
import createClient from "openapi-fetch";
import type {
  ChatCompletionMessage,
  ChatCompletionMessageParam,
} from "openai/resources/chat/completions";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
type Message = Schemas["MessageRead"];
type Content = Message["content"];
type Part = Exclude<Content, string | null>[number];
type ToolCall = NonNullable<Message["tool_calls"]>[number];
type WindowMessage = Schemas["ContextWindow"]["messages"][number];
type Problem = Schemas["Problem"];

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${what}`);
}

function unexpected(value: never): never {
  throw new Error(`unexpected variant: ${JSON.stringify(value)}`);
}

function problem(error: Problem | undefined, status: number): string {
  return error === undefined ? `HTTP ${status}` : `${error.status} ${error.code}: ${error.detail}`;
}

function partText(part: Part): string {
  switch (part.type) {
    case "text":
      return part.text;
    case "refusal":
      return `[refused: ${part.refusal}]`;
    case "image_url":
      return `[image ${part.image_url.url} detail=${part.image_url.detail ?? "auto"}]`;
    case "input_audio":
      return `[audio ${part.input_audio.format}, ${part.input_audio.data.length} base64 chars]`;
    case "file":
      return `[file ${part.file.filename ?? part.file.file_id ?? "inline"}]`;
    default:
      return unexpected(part);
  }
}

function contentText(content: Content): string {
  if (content === null) return "";
  if (typeof content === "string") return content;
  return content.map(partText).join(" | ");
}

function toolCallText(call: ToolCall): string {
  switch (call.type) {
    case "function":
      return `${call.id}:${call.function.name}(${call.function.arguments})`;
    case "custom":
      return `${call.id}:${call.custom.name}<${call.custom.input}>`;
    default:
      return unexpected(call);
  }
}

function windowLine(message: WindowMessage): string {
  switch (message.role) {
    case "system":
      return `system: ${typeof message.content === "string" ? message.content : message.content.map((p) => p.text).join(" ")}`;
    case "user":
      return `user: ${contentText(message.content)}`;
    case "assistant": {
      const calls = (message.tool_calls ?? []).map(toolCallText).join(", ");
      return `assistant: ${contentText(message.content)}${calls ? ` calls ${calls}` : ""}`;
    }
    case "tool":
      return `tool ${message.tool_call_id}: ${typeof message.content === "string" ? message.content : message.content.map((p) => p.text).join(" ")}`;
    default:
      return unexpected(message);
  }
}

async function main(): Promise<void> {
  const user = env("CHATHISTORY_USER");
  const client = createClient<paths>({
    baseUrl: env("CHATHISTORY_URL"),
    headers: { Authorization: `Bearer ${env("CHATHISTORY_TOKEN")}` },
  });
  const health = await client.GET("/healthz");
  check(health.data?.status === "ok", "healthz answers ok");

  // -- a conversation -------------------------------------------------------------------------
  const created = await client.POST("/api/{user_id}/conversations", {
    params: { path: { user_id: user } },
    body: { title: "Lisbon weekend", metadata: { client: "openapi-fetch" } },
  });
  if (created.data === undefined) throw new Error(problem(created.error, created.response.status));
  check(created.response.status === 201, "a new conversation is 201");
  check(created.data.object === "conversation", "a conversation says so");
  const conversation = created.data.id;
  const path = { user_id: user, conversation_id: conversation };

  // -- one message: a single object answers a message ----------------------------------------
  const firstId = crypto.randomUUID();
  const question: Schemas["MessageCreate"] = {
    id: firstId,
    role: "user",
    content: [
      { type: "text", text: "What is the weather in Lisbon this weekend?" },
      { type: "image_url", image_url: { url: "https://example.com/lisbon.png", detail: "low" } },
    ],
  };
  const one = await client.POST("/api/{user_id}/conversations/{conversation_id}/messages", {
    params: { path },
    body: question,
  });
  if (one.data === undefined) throw new Error(problem(one.error, one.response.status));
  check(one.response.status === 201, "a new message is 201");
  if (one.data.object !== "message") throw new Error("a single object answers a message");
  const stored: Message = one.data;
  check(stored.id === firstId && stored.seq === 1, "the client's id, first position");
  const parts = Array.isArray(stored.content) ? stored.content.map(partText) : [];
  check(parts.length === 2 && parts[1] === "[image https://example.com/lisbon.png detail=low]",
    "content parts come back as sent, read by type");

  const replay = await client.POST("/api/{user_id}/conversations/{conversation_id}/messages", {
    params: { path },
    body: question,
  });
  check(replay.response.status === 200 && replay.data?.object === "message"
    && replay.data.id === firstId, "a retried append is an idempotent 200 replay");

  // -- a batch: an assistant's tool calls and their results, atomically: a list object --------
  const batch = await client.POST("/api/{user_id}/conversations/{conversation_id}/messages", {
    params: { path },
    body: [
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_weather",
            type: "function",
            function: { name: "weather", arguments: '{"city": "Lisbon"}' },
          },
          { id: "call_sql", type: "custom", custom: { name: "sql", input: "SELECT 1" } },
        ],
      },
      { role: "tool", tool_call_id: "call_weather", content: "22 °C, sunny" },
      { role: "tool", tool_call_id: "call_sql", content: [{ type: "text", text: "1" }] },
      {
        role: "assistant",
        content: [{ type: "text", text: "Sunny, 22 °C: pack light." }],
        metadata: { model: "gpt-4o" },
      },
    ],
  });
  if (batch.data === undefined) throw new Error(problem(batch.error, batch.response.status));
  check(batch.response.status === 201, "a new batch is 201");
  if (batch.data.object !== "list") throw new Error("an array answers a list object");
  const seqs = batch.data.data.map((m) => m.seq);
  check(seqs.join() === "2,3,4,5", "the batch follows the first message, in order");
  const calls = batch.data.data.flatMap((m) => m.tool_calls ?? []).map(toolCallText);
  check(calls.join() === 'call_weather:weather({"city": "Lisbon"}),call_sql:sql<SELECT 1>',
    "tool calls come back typed, function and custom");

  // -- problems: typed application/problem+json ----------------------------------------------
  const orphan = await client.POST("/api/{user_id}/conversations/{conversation_id}/messages", {
    params: { path },
    body: { role: "tool", content: "no call answered" },
  });
  check(orphan.data === undefined && orphan.error?.status === 422
    && orphan.error.code === "validation_error"
    && (orphan.error.errors ?? []).some((e) => e.loc.join(".") === "tool_call_id"),
    "a tool message without tool_call_id is a 422 naming the field");

  // -- the messages, page by page with the cursor ----------------------------------------------
  const listed: Message[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await client.GET("/api/{user_id}/conversations/{conversation_id}/messages", {
      params: { path, query: cursor === undefined ? { limit: 2 } : { limit: 2, cursor } },
    });
    if (page.data === undefined) throw new Error(problem(page.error, page.response.status));
    pages += 1;
    listed.push(...page.data.data);
    if (!page.data.has_more || page.data.next_cursor === null) break;
    cursor = page.data.next_cursor;
  }
  check(listed.map((m) => m.seq).join() === "1,2,3,4,5" && pages === 3,
    "three pages of two, every message once, in order");
  const last = listed[listed.length - 1];
  check(last !== undefined && contentText(last.content) === "Sunny, 22 °C: pack light.",
    "the last message reads back by part type");

  const fetched = await client.GET(
    "/api/{user_id}/conversations/{conversation_id}/messages/{message_id}",
    { params: { path: { ...path, message_id: firstId } } },
  );
  check(fetched.data?.role === "user" && fetched.data.seq === 1, "one message by id");

  // -- the context window: Chat Completions input, narrowed by role ----------------------------
  const window = await client.GET("/api/{user_id}/conversations/{conversation_id}/context", {
    params: { path, query: { max_tokens: 4000 } },
  });
  if (window.data === undefined) throw new Error(problem(window.error, window.response.status));
  check(window.data.object === "context_window", "a context window says so");
  check(window.data.token_count <= window.data.max_tokens && !window.data.truncated,
    "everything fits the budget");
  const lines = window.data.messages.map(windowLine);
  // What Chat Completions takes as `messages`, as the SDK types it: no cast.
  const prompt: ChatCompletionMessageParam[] = window.data.messages;
  check(prompt.length === 5, "the whole window is the SDK's input");

  // -- rename, list, delete -------------------------------------------------------------------
  const renamed = await client.PATCH("/api/{user_id}/conversations/{conversation_id}", {
    params: { path },
    body: { title: "Lisbon, sunny" },
  });
  check(renamed.data?.title === "Lisbon, sunny" && renamed.data.message_count === 5,
    "renamed, five messages");
  const conversations = await client.GET("/api/{user_id}/conversations", {
    params: { path: { user_id: user }, query: { limit: 5 } },
  });
  check((conversations.data?.data ?? []).some((c) => c.id === conversation),
    "the conversation is listed");

  // -- an answer as the SDK returns it (a cited web search answer) is appended as it is -------
  const answer: ChatCompletionMessage = {
    role: "assistant",
    content: "Sunny all weekend [1].",
    refusal: null,
    annotations: [
      {
        type: "url_citation",
        url_citation: { start_index: 18, end_index: 21, title: "Forecast", url: "https://example.com/f" },
      },
    ],
  };
  const cited = await client.POST("/api/{user_id}/conversations/{conversation_id}/messages", {
    params: { path },
    body: answer,
  });
  if (cited.data === undefined) throw new Error(problem(cited.error, cited.response.status));
  if (cited.data.object !== "message") throw new Error("a single object answers a message");
  const citation = cited.data.annotations?.[0];
  check(cited.data.seq === 6 && citation?.url_citation.url === "https://example.com/f",
    "the SDK's message is stored whole, its citation typed");

  const deleted = await client.DELETE("/api/{user_id}/conversations/{conversation_id}", {
    params: { path },
  });
  check(deleted.response.status === 204, "deleted");
  const gone = await client.GET("/api/{user_id}/conversations/{conversation_id}", {
    params: { path },
  });
  check(gone.data === undefined && gone.error?.status === 404 && gone.error.code === "not_found",
    "a deleted conversation is a 404 problem");

  console.log(JSON.stringify({ conversation, seqs: listed.map((m) => m.seq), pages, calls, window: lines }));
}

await main();
