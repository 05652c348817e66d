import { useState, type FormEvent } from "react";

import { Api } from "../api/client";
import { messageOf } from "../context";

/** First visit: the API key, checked against the gateway before it is kept (in this browser only). */
export function KeyEntry({ onKey }: { onKey: (key: string) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setChecking(true);
    setError(null);
    try {
      await new Api(key.trim()).models();
      onKey(key.trim());
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setChecking(false);
    }
  };
  return (
    <main className="key-entry">
      <form onSubmit={(e) => void submit(e)} aria-labelledby="key-title">
        <h1 id="key-title">Chatbot-LLM</h1>
        <p>
          Enter your API key. <code>make run</code> prints a link that fills it in; an admin creates keys with <code>POST /api/v1/admin/keys</code>.
        </p>
        <label htmlFor="api-key">API key</label>
        <input id="api-key" type="password" autoComplete="off" value={key} onChange={(e) => setKey(e.target.value)} required placeholder="sk-…" />
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={!key.trim() || checking}>
          {checking ? "Checking…" : "Continue"}
        </button>
        <p className="muted small">The key stays in this browser (local storage) and is sent only to this gateway.</p>
      </form>
    </main>
  );
}
