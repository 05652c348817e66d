import { memo, useCallback, useState, type KeyboardEvent } from "react";

import type { Message } from "../api/types";
import { Attachments } from "./Attachments";
import { useApp } from "../context";
import { Markdown } from "./Markdown";
import { Sources } from "./Sources";

export interface MessageActions {
  /** Switch to the sibling `step` places away (‹ -1, › +1). */
  switchBranch: (message: Message, step: number) => void;
  /** Send `content` as a new version of the user message `message` (a sibling). */
  edit: (message: Message, content: string) => void;
  regenerate: (message: Message) => void;
  fork: (message: Message) => void;
}

interface Props {
  message: Message;
  actions: MessageActions;
  /** No edit, regenerate or branch switch while an answer streams. */
  locked: boolean;
  highlighted?: boolean;
  /** The text streaming into this (assistant) message, replacing its stored content. */
  live?: string;
  /** The conversation it belongs to (for its stored images). */
  conversationId?: string;
}

export function BranchNav({ message, onSwitch, disabled }: { message: Message; onSwitch: (step: number) => void; disabled: boolean }) {
  if (message.siblings.length < 2) return null;
  const of = `${message.position} / ${message.siblings.length}`;
  return (
    <span className="branches" role="group" aria-label={`Version ${message.position} of ${message.siblings.length}`}>
      <button type="button" aria-label="Previous version" disabled={disabled || message.position <= 1} onClick={() => onSwitch(-1)}>
        ‹
      </button>
      <span className="branch-count">{of}</span>
      <button type="button" aria-label="Next version" disabled={disabled || message.position >= message.siblings.length} onClick={() => onSwitch(1)}>
        ›
      </button>
    </span>
  );
}

function ConversationImages({ conversationId, attachments }: { conversationId: string; attachments: NonNullable<Message["attachments"]> }) {
  const { api } = useApp();
  const load = useCallback((id: string) => api.attachment(conversationId, id), [api, conversationId]);
  return <Attachments load={load} attachments={attachments} />;
}

function statusNote(message: Message): string | null {
  if (message.status === "cancelled") return "Stopped";
  if (message.status === "failed") return message.error ?? "The answer failed";
  return null;
}

function sameMessage(a: Message, b: Message): boolean {
  return a.id === b.id && (a.attachments?.length ?? 0) === (b.attachments?.length ?? 0) && a.content === b.content && a.status === b.status && a.error === b.error && a.position === b.position && a.siblings.length === b.siblings.length && a.model === b.model && (a.sources?.length ?? 0) === (b.sources?.length ?? 0);
}

/** One stored message; memoized (by what it shows, across reloads) so that a streaming answer re-renders only itself. */
export const MessageBubble = memo(function MessageBubble({ message, actions, locked, highlighted = false, conversationId }: Props) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(message.content);
  const note = statusNote(message);
  const submit = () => {
    const content = draft.trim();
    if (!content) return;
    setEditing(false);
    actions.edit(message, content);
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") setEditing(false);
  };
  const label = message.role === "user" ? "You" : (message.model ?? "Assistant");
  return (
    <article
      className={`bubble ${message.role}${highlighted ? " highlighted" : ""}${message.status === "failed" ? " failed" : ""}`}
      aria-label={`${message.role === "user" ? "Your message" : "Answer"}`}
      data-message-id={message.id}
      id={`message-${message.id}`}
    >
      <header className="bubble-head">
        <span className="who">{label}</span>
        <BranchNav message={message} onSwitch={(step) => actions.switchBranch(message, step)} disabled={locked} />
      </header>
      {editing ? (
        <div className="edit">
          <label className="visually-hidden" htmlFor={`edit-${message.id}`}>
            Edit your message
          </label>
          <textarea id={`edit-${message.id}`} value={draft} onChange={(e) => setDraft(e.target.value)} onKeyDown={onKeyDown} autoFocus rows={3} />
          <div className="row">
            <button type="button" className="primary" onClick={submit}>
              Save and send
            </button>
            <button type="button" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </div>
        </div>
      ) : (
        <div className="content">{message.role === "user" ? <p className="plain">{message.content}</p> : <Markdown text={message.content} />}</div>
      )}
      {message.sources && message.sources.length > 0 && <Sources sources={message.sources} unknown={message.unknown_citations ?? []} />}
      {conversationId && message.attachments && message.attachments.length > 0 && (
        <ConversationImages conversationId={conversationId} attachments={message.attachments} />
      )}
      {note && (
        <p className="note" role={message.status === "failed" ? "alert" : undefined}>
          {note}
        </p>
      )}
      {!editing && (
        <footer className="bubble-actions">
          {message.role === "user" ? (
            <button
              type="button"
              disabled={locked}
              onClick={() => {
                setDraft(message.content);
                setEditing(true);
              }}
            >
              Edit
            </button>
          ) : (
            <button type="button" disabled={locked || message.status === "streaming"} onClick={() => actions.regenerate(message)}>
              {message.status === "failed" ? "Retry" : "Regenerate"}
            </button>
          )}
          <button type="button" disabled={locked} onClick={() => actions.fork(message)} title="Copy the conversation up to here into a new one">
            Fork
          </button>
        </footer>
      )}
    </article>
  );
}, (before, after) => sameMessage(before.message, after.message) && before.conversationId === after.conversationId && before.actions === after.actions && before.locked === after.locked && before.highlighted === after.highlighted);
