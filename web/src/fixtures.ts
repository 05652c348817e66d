// Conversations for component and hook tests.
import type { Conversation, Message } from "./api/types";

export function message(id: string, parent: string | null, role: Message["role"], siblings: string[], at: string, content = id): Message {
  return {
    id,
    parent_id: parent,
    role,
    content,
    status: "complete",
    model: role === "assistant" ? "fake" : null,
    error: null,
    usage: null,
    request_id: null,
    created_at: at,
    siblings,
    position: siblings.indexOf(id) + 1,
  };
}

/** Q1 was edited into Q1b; Q1 has two answers (A1, then A1b), Q1b one. Shown: Q1b → A2. */
export function branched(): Conversation {
  return {
    id: "c1",
    title: "Branches",
    model: "fake",
    system_prompt: null,
    tags: [],
    pinned: false,
    archived: false,
    active_leaf_id: "a2",
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:05Z",
    active_path: ["q1b", "a2"],
    messages: [
      message("q1", null, "user", ["q1", "q1b"], "2026-01-01T00:00:00Z", "First question"),
      message("a1", "q1", "assistant", ["a1", "a1b"], "2026-01-01T00:00:01Z", "First answer"),
      message("a1b", "q1", "assistant", ["a1", "a1b"], "2026-01-01T00:00:02Z", "Regenerated answer"),
      message("q1b", null, "user", ["q1", "q1b"], "2026-01-01T00:00:03Z", "Edited question"),
      message("a2", "q1b", "assistant", ["a2"], "2026-01-01T00:00:04Z", "Answer to the edit"),
    ],
  };
}
