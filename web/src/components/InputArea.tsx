import { useState, type FormEvent, type KeyboardEvent } from "react";

interface Props {
  busy: boolean;
  onSend: (content: string) => void;
  onStop: () => void;
  disabled?: boolean;
}

/** Enter sends, Shift+Enter starts a new line; Stop while an answer is generated. */
export function InputArea({ busy, onSend, onStop, disabled = false }: Props) {
  const [text, setText] = useState("");
  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    const content = text.trim();
    if (!content || busy || disabled) return;
    onSend(content);
    setText("");
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  };
  return (
    <form className="input-area" onSubmit={submit}>
      <label htmlFor="prompt" className="visually-hidden">
        Message
      </label>
      <textarea
        id="prompt"
        value={text}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKeyDown}
        placeholder="Send a message (Enter sends, Shift+Enter for a new line)"
        rows={Math.min(8, Math.max(1, text.split("\n").length))}
        disabled={disabled}
      />
      {busy ? (
        <button type="button" className="stop" onClick={onStop}>
          Stop
        </button>
      ) : (
        <button type="submit" className="primary" disabled={!text.trim() || disabled}>
          Send
        </button>
      )}
    </form>
  );
}
