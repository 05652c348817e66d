import { useEffect, useRef, useState } from "react";

import type { Source } from "../api/types";
import { messageOf, useApp } from "../context";

function place(source: Source): string {
  return source.document_name + (source.page !== null ? `, p. ${source.page}` : "");
}

/** The passage in its document's text, highlighted and scrolled into view. */
function PassageDialog({ source, onClose }: { source: Source; onClose: () => void }) {
  const { api } = useApp();
  const [text, setText] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const mark = useRef<HTMLElement>(null);
  useEffect(() => {
    api.documentText(source.knowledge_base_id, source.document_id).then((document) => setText(document.text), (error) => setProblem(messageOf(error)));
  }, [api, source]);
  useEffect(() => mark.current?.scrollIntoView?.({ block: "center" }), [text]);
  return (
    <div className="dialog-backdrop" onClick={onClose}>
      <div role="dialog" aria-modal="true" aria-label={`Source ${source.number}: ${place(source)}`} className="dialog passage" onClick={(e) => e.stopPropagation()}>
        <header className="row">
          <h2>
            [{source.number}] {place(source)}
            {source.heading && <small> · {source.heading}</small>}
          </h2>
          <button type="button" onClick={onClose}>
            Close
          </button>
        </header>
        {problem && <p role="alert">{problem}</p>}
        {text === null && !problem && <p role="status">Loading…</p>}
        {text !== null && (
          <pre className="document-text">
            {text.slice(0, source.start)}
            <mark ref={mark} className="cited">
              {text.slice(source.start, source.end)}
            </mark>
            {text.slice(source.end)}
          </pre>
        )}
      </div>
    </div>
  );
}

/** A grounded answer's sources as chips that open their passage; made-up citation numbers flagged, never links. */
export function Sources({ sources, unknown }: { sources: Source[]; unknown: number[] }) {
  const [open, setOpen] = useState<Source | null>(null);
  return (
    <div className="sources" aria-label="Sources">
      {sources.map((source) => (
        <button key={source.number} type="button" className="chip" title={source.heading} onClick={() => setOpen(source)}>
          [{source.number}] {place(source)}
        </button>
      ))}
      {unknown.length > 0 && (
        <p className="note unknown-citations" role="note">
          No such source: {unknown.map((n) => `[${n}]`).join(" ")}
        </p>
      )}
      {open && <PassageDialog source={open} onClose={() => setOpen(null)} />}
    </div>
  );
}
