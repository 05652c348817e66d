import { useEffect, useState } from "react";

import type { KnowledgeBase } from "../api/types";
import { useApp } from "../context";

/** The knowledge bases a conversation's answers are grounded in: a menu of checkboxes in the chat header. */
export function KnowledgeSelector({ value, onChange }: { value: string[]; onChange: (ids: string[]) => void }) {
  const { api } = useApp();
  const [bases, setBases] = useState<KnowledgeBase[]>([]);
  useEffect(() => {
    api.knowledgeBases().then(setBases, () => setBases([]));
  }, [api]);
  if (!bases.length) return null;
  const chosen = bases.filter((b) => value.includes(b.id));
  return (
    <details className="knowledge-selector">
      <summary aria-label="Knowledge bases">{chosen.length ? `Grounded in ${chosen.map((b) => b.name).join(", ")}` : "Knowledge: none"}</summary>
      <fieldset>
        <legend className="visually-hidden">Ground answers in</legend>
        {bases.map((b) => (
          <label key={b.id}>
            <input
              type="checkbox"
              checked={value.includes(b.id)}
              onChange={(event) => onChange(event.target.checked ? [...value, b.id] : value.filter((id) => id !== b.id))}
            />
            {b.name}
          </label>
        ))}
      </fieldset>
    </details>
  );
}
