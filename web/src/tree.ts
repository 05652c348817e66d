// A conversation's message tree: the shown path, and the branch a sibling switch leads to.
import type { Conversation, Message } from "./api/types";

/** The messages of the active path, root first. */
export function activePath(conversation: Conversation): Message[] {
  const byId = new Map(conversation.messages.map((m) => [m.id, m]));
  return conversation.active_path.flatMap((id) => byId.get(id) ?? []);
}

/** The leaf to make active to show `messageId`: down its newest child at every step. */
export function leafUnder(conversation: Conversation, messageId: string): string {
  const newestChild = new Map<string, Message>();
  for (const message of conversation.messages) {
    if (message.parent_id === null) continue;
    const known = newestChild.get(message.parent_id);
    if (!known || message.created_at >= known.created_at) newestChild.set(message.parent_id, message);
  }
  let leaf = messageId;
  for (let child = newestChild.get(leaf); child; child = newestChild.get(leaf)) leaf = child.id;
  return leaf;
}

/** The sibling `step` places from `message` (‹ is -1, › is +1), or null past either end. */
export function siblingAt(message: Message, step: number): string | null {
  return message.siblings[message.position - 1 + step] ?? null;
}
