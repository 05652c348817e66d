import { describe, expect, it } from "vitest";

import { applyEvent, isAfter, newAnswer, type NativeEvent } from "./events";

const run = (events: NativeEvent[]) => events.reduce(applyEvent, newAnswer());

describe("an answer built from native events", () => {
  it("shows queue and start progress before the first token, then the text", () => {
    const queued = run([{ type: "start", request_id: "r", conversation_id: "c", user_message_id: "u", assistant_message_id: "a" }, { type: "queued", position: 2 }]);
    expect(queued).toMatchObject({ phase: "queued", position: 2, requestId: "r", assistantMessageId: "a", text: "" });
    const started = applyEvent(queued, { type: "started", model: "fast", provider: "openai" });
    expect(started).toMatchObject({ phase: "started", model: "fast" });
    const streaming = [{ type: "delta", text: "Hel" } as const, { type: "delta", text: "lo" } as const].reduce(applyEvent, started);
    expect(streaming).toMatchObject({ phase: "streaming", text: "Hello" });
  });

  it("drops the partial attempt at a restart", () => {
    const answer = run([
      { type: "started", model: "fast", provider: "openai" },
      { type: "delta", text: "half an ans" },
      { type: "restart", attempt: 2 },
      { type: "delta", text: "A whole answer." },
      { type: "done", reason: "stop" },
    ]);
    expect(answer).toMatchObject({ text: "A whole answer.", attempt: 2, phase: "done", reason: "stop" });
  });

  it("keeps the error and the usage", () => {
    const answer = run([
      { type: "delta", text: "partial" },
      { type: "usage", input_tokens: 5, output_tokens: 1, cached_tokens: 0, cost_usd: 0.001, estimated: false },
      { type: "error", code: "upstream_error", message: "the provider failed" },
      { type: "done", reason: "error" },
    ]);
    expect(answer.error).toEqual({ code: "upstream_error", message: "the provider failed" });
    expect(answer.usage).toEqual({ input_tokens: 5, output_tokens: 1, cached_tokens: 0, cost_usd: 0.001, estimated: false });
    expect(answer).toMatchObject({ text: "partial", reason: "error" });
  });
});

describe("stream entry ids", () => {
  it("order by time, then sequence", () => {
    expect(isAfter("1700000000001-0", "1700000000000-5")).toBe(true);
    expect(isAfter("1700000000000-2", "1700000000000-10")).toBe(false);
    expect(isAfter("1700000000000-10", "1700000000000-2")).toBe(true);
    expect(isAfter("1700000000000-1", "1700000000000-1")).toBe(false);
    expect(isAfter("1-0", "0-0")).toBe(true);
  });
});
