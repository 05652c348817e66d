// One answer at a time in a conversation: send, regenerate, resume after a reload, stop.
import { useCallback, useEffect, useRef, useState } from "react";

import { ApiError, type Api } from "../api/client";
import type { NewMessage } from "../api/types";
import { applyEvent, newAnswer, type Answer } from "../stream/events";
import { followStream, type Open } from "../stream/follow";

/** What was asked and is not yet stored: a question (shown as sent), or the answer being regenerated (hidden). */
export interface PendingUser {
  content: string;
  parentId: string | null | undefined;
  /** Regenerating: the answer a new sibling replaces on screen. */
  replacing?: string;
  /** The images sent with the question. */
  images?: { url: string }[];
}

export interface Turn {
  /** The answer streaming now (or the refusal of the last try), null when idle. */
  answer: Answer | null;
  /** The question sent and not yet stored, shown until the stream's `start`. */
  pending: PendingUser | null;
  busy: boolean;
  send: (message: NewMessage) => void;
  regenerate: (messageId: string, model: string | null) => void;
  resume: (requestId: string) => void;
  stop: () => void;
}

/**
 * `onStored` reloads the conversation: at the stream's `start` (the question and the empty answer
 * are stored) and after `done`; it resolves true once the answer is stored as final.
 */
export function useTurn(api: Api, conversationId: string | null, onStored: (final: boolean) => Promise<boolean>): Turn {
  const [answer, setAnswer] = useState<Answer | null>(null);
  const [pending, setPending] = useState<PendingUser | null>(null);
  const reading = useRef<AbortController | null>(null);
  const stopAsked = useRef(false);
  const storedRef = useRef(onStored);
  storedRef.current = onStored;

  // Leaving the conversation stops reading, not the generation: coming back resumes it.
  useEffect(() => () => reading.current?.abort(), [conversationId]);

  const follow = useCallback(
    async (open: Open, requestId: string | null) => {
      reading.current?.abort();
      const controller = new AbortController();
      reading.current = controller;
      stopAsked.current = false;
      let current = newAnswer(requestId);
      setAnswer(current);
      const update = (next: Answer) => {
        current = next;
        if (!controller.signal.aborted) setAnswer(next);
      };
      try {
        await followStream(
          open,
          (id, last) => api.resume(id, last, controller.signal),
          (event) => {
            update(applyEvent({ ...current, reconnecting: false }, event));
            if (event.type === "start") {
              setPending(null);
              if (stopAsked.current) void api.cancel(event.request_id);
              void storedRef.current(false);
            }
          },
          { signal: controller.signal, onReconnect: () => update({ ...current, reconnecting: true }) },
        );
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        const code = error instanceof ApiError ? (error.code ?? `http_${error.status}`) : "stream_lost";
        update({ ...current, phase: "done", reason: "error", reconnecting: false, error: { code, message } });
        if (current.assistantMessageId === null) return; // refused before anything was stored: keep the notice
      }
      if (controller.signal.aborted) return;
      // The conversation service stores the end a moment after `done`: keep the live text until then.
      for (let tries = 0; tries < 40 && !controller.signal.aborted; tries++) {
        if (await storedRef.current(true)) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      if (!controller.signal.aborted) {
        setAnswer(null);
        reading.current = null;
      }
    },
    [api],
  );

  const send = useCallback(
    (message: NewMessage) => {
      if (!conversationId) return;
      setPending({ content: message.content, parentId: message.parent_id, images: message.images });
      void follow(() => api.sendMessage(conversationId, message, reading.current?.signal), null);
    },
    [api, conversationId, follow],
  );

  const regenerate = useCallback(
    (messageId: string, model: string | null) => {
      if (!conversationId) return;
      setPending({ content: "", parentId: undefined, replacing: messageId });
      void follow(() => api.regenerate(conversationId, messageId, model, reading.current?.signal), null);
    },
    [api, conversationId, follow],
  );

  const resume = useCallback((requestId: string) => void follow(() => api.resume(requestId, "0-0", reading.current?.signal), requestId), [api, follow]);

  const stop = useCallback(() => {
    stopAsked.current = true;
    const requestId = answer?.requestId;
    if (requestId) void api.cancel(requestId);
  }, [api, answer?.requestId]);


  const busy = answer !== null && answer.phase !== "done";
  return { answer, pending, busy, send, regenerate, resume, stop };
}
