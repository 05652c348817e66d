// The native event protocol (`text/event-stream` from `/api/v1`), and an answer built from its events.
import type { TokenUsage } from "../api/types";

export type NativeEvent =
  | { type: "start"; request_id: string; conversation_id: string | null; user_message_id: string | null; assistant_message_id: string | null }
  | { type: "queued"; position: number }
  | { type: "started"; model: string; provider: string; upstream_model?: string; attempt?: number }
  | { type: "delta"; text: string }
  | ({ type: "usage" } & TokenUsage)
  | { type: "restart"; attempt: number }
  | { type: "error"; code: string; message: string; retry_after?: number | null }
  | { type: "done"; reason: string }
  | { type: "tool_call"; index: number };

export type Phase = "sending" | "queued" | "started" | "streaming" | "done";

/** An answer as it streams: what the UI shows while the stored message is not yet final. */
export interface Answer {
  phase: Phase;
  requestId: string | null;
  userMessageId: string | null;
  assistantMessageId: string | null;
  position: number | null;
  model: string | null;
  attempt: number;
  text: string;
  usage: TokenUsage | null;
  error: { code: string; message: string } | null;
  /** Why it ended (`stop`, `length`, `cancelled`, `error`); null while it runs. */
  reason: string | null;
  /** True while the connection is being re-established (the text so far stays). */
  reconnecting: boolean;
}

export function newAnswer(requestId: string | null = null): Answer {
  return {
    phase: "sending",
    requestId,
    userMessageId: null,
    assistantMessageId: null,
    position: null,
    model: null,
    attempt: 1,
    text: "",
    usage: null,
    error: null,
    reason: null,
    reconnecting: false,
  };
}

/** The answer after one more event. A `restart` drops the partial attempt: its text is not part of the answer. */
export function applyEvent(answer: Answer, event: NativeEvent): Answer {
  switch (event.type) {
    case "start":
      return {
        ...answer,
        requestId: event.request_id,
        userMessageId: event.user_message_id,
        assistantMessageId: event.assistant_message_id,
      };
    case "queued":
      return { ...answer, phase: answer.phase === "sending" ? "queued" : answer.phase, position: event.position, reconnecting: false };
    case "started":
      return { ...answer, phase: answer.text ? "streaming" : "started", model: event.model, attempt: event.attempt ?? answer.attempt };
    case "delta":
      return { ...answer, phase: "streaming", text: answer.text + event.text, reconnecting: false };
    case "restart":
      return { ...answer, phase: "started", text: "", attempt: event.attempt, error: null };
    case "usage": {
      const { type: _type, ...usage } = event;
      return { ...answer, usage };
    }
    case "error":
      return { ...answer, error: { code: event.code, message: event.message } };
    case "done":
      return { ...answer, phase: "done", reason: event.reason, reconnecting: false };
    default:
      return answer;
  }
}

/** Whether Redis stream entry id `a` comes after `b` (`<ms>-<seq>`). */
export function isAfter(a: string, b: string): boolean {
  const [aMs = 0, aSeq = 0] = a.split("-").map(Number);
  const [bMs = 0, bSeq = 0] = b.split("-").map(Number);
  return aMs !== bMs ? aMs > bMs : aSeq > bSeq;
}
