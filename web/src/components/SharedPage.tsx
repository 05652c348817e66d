import { useCallback, useEffect, useState } from "react";

import { readShared, readSharedImage } from "../api/client";
import type { SharedConversation } from "../api/types";
import { messageOf } from "../context";
import { Attachments } from "./Attachments";
import { Markdown } from "./Markdown";

/** A shared snapshot: read-only, no key needed. */
export function SharedPage({ token }: { token: string }) {
  const [shared, setShared] = useState<SharedConversation | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback((id: string) => readSharedImage(token, id), [token]);
  useEffect(() => {
    readShared(token).then(setShared, (e) => setError(messageOf(e)));
  }, [token]);
  return (
    <main className="shared">
      {error && <p role="alert">{error}</p>}
      {!shared && !error && <p role="status">Loading…</p>}
      {shared && (
        <>
          <header className="shared-head">
            <h1>{shared.title || "Shared conversation"}</h1>
            <p className="muted">Read-only snapshot, shared {new Date(shared.shared_at).toLocaleString()}</p>
          </header>
          <div className="messages">
            {shared.messages.map((message, index) => (
              <article key={index} className={`bubble ${message.role}`} aria-label={message.role === "user" ? "Question" : "Answer"}>
                <header className="bubble-head">
                  <span className="who">{message.role === "user" ? "User" : (message.model ?? "Assistant")}</span>
                </header>
                <div className="content">{message.role === "user" ? <p className="plain">{message.content}</p> : <Markdown text={message.content} />}</div>
                {message.attachments && message.attachments.length > 0 && <Attachments load={load} attachments={message.attachments} />}
              </article>
            ))}
          </div>
        </>
      )}
    </main>
  );
}
