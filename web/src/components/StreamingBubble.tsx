import type { Message } from "../api/types";
import type { Answer } from "../stream/events";
import { BranchNav } from "./MessageBubble";
import { Markdown } from "./Markdown";

function progress(answer: Answer): string {
  if (answer.reconnecting) return "Connection lost: reconnecting…";
  switch (answer.phase) {
    case "sending":
      return "Sending…";
    case "queued":
      return answer.position ? `Queued (${answer.position} ahead)` : "Queued";
    case "started":
      return answer.attempt > 1 ? `Restarted (attempt ${answer.attempt})…` : `${answer.model ?? "The model"} is thinking…`;
    case "streaming":
      return "Generating…";
    default:
      return answer.reason === "cancelled" ? "Stopped" : "";
  }
}

/** The answer as it streams: only this re-renders per token. */
export function StreamingBubble({ answer, stored, onRetry }: { answer: Answer; stored: Message | null; onRetry: () => void }) {
  const status = progress(answer);
  return (
    <article className="bubble assistant streaming" aria-label="Answer" aria-busy={answer.phase !== "done"} data-message-id={answer.assistantMessageId ?? ""}>
      <header className="bubble-head">
        <span className="who">{answer.model ?? stored?.model ?? "Assistant"}</span>
        {stored && <BranchNav message={stored} onSwitch={() => undefined} disabled />}
      </header>
      <div className="content">
        {answer.text ? <Markdown text={answer.text} /> : null}
        {answer.phase !== "done" && <span className="cursor" aria-hidden="true" />}
      </div>
      <p className="progress" role="status" aria-live="polite">
        {status}
      </p>
      {answer.error && (
        <div className="note" role="alert">
          <span>{answer.error.message}</span>{" "}
          <button type="button" onClick={onRetry}>
            Retry
          </button>
        </div>
      )}
    </article>
  );
}
