import { createParser } from "eventsource-parser";
import { useCallback, useEffect, useState, type DragEvent } from "react";

import type { KbDocument, KnowledgeBase } from "../api/types";
import { messageOf, useApp } from "../context";

interface Progress {
  document_id: string;
  state: KbDocument["state"];
  done: number;
  total: number;
  error: string | null;
}

/** Follows a knowledge base's progress stream (server-sent events) and hands each event to `onProgress`. */
async function follow(open: () => Promise<Response>, onProgress: (progress: Progress) => void): Promise<void> {
  const response = await open();
  const parser = createParser({
    onEvent: (message) => {
      if (message.event === "progress") onProgress(JSON.parse(message.data) as Progress);
    },
  });
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.feed(value);
  }
}

function stateLabel(document: KbDocument): string {
  switch (document.state) {
    case "embedding":
      return `embedding ${document.done}/${document.total}`;
    case "failed":
      return `failed: ${document.error ?? "unknown reason"}`;
    case "ready":
      return `ready · ${document.chunks} passages${document.pages ? ` · ${document.pages} pages` : ""}`;
    default:
      return document.state;
  }
}

function Documents({ base, onChanged }: { base: KnowledgeBase; onChanged: () => void }) {
  const { api, notify } = useApp();
  const [documents, setDocuments] = useState<KbDocument[]>([]);
  const [dragging, setDragging] = useState(false);
  const reload = useCallback(() => {
    api.documents(base.id).then(setDocuments, (error) => notify(messageOf(error)));
  }, [api, base.id, notify]);

  useEffect(() => {
    reload();
    const stop = new AbortController();
    const apply = (progress: Progress) => {
      setDocuments((all) => all.map((d) => (d.id === progress.document_id ? { ...d, ...progress } : d)));
      if (progress.state === "ready" || progress.state === "failed") {
        reload();
        onChanged();
      }
    };
    follow(() => api.progress(base.id, stop.signal), apply).catch(() => undefined);
    return () => stop.abort();
  }, [api, base.id, reload, onChanged]);

  const upload = async (files: FileList | File[]) => {
    for (const file of Array.from(files)) {
      try {
        const added = await api.addDocument(base.id, file);
        if (added.duplicate) notify(`${file.name} is already in ${base.name}`);
      } catch (error) {
        notify(`${file.name}: ${messageOf(error)}`);
      }
    }
    reload();
    onChanged();
  };
  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setDragging(false);
    void upload(event.dataTransfer.files);
  };

  return (
    <section className="kb-documents" aria-label={`Documents of ${base.name}`}>
      <div
        className={`dropzone${dragging ? " dragging" : ""}`}
        onDragOver={(event) => {
          event.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={onDrop}
      >
        <p>Drop PDF, DOCX, HTML, Markdown or text files here, or</p>
        <label className="button">
          choose files
          <input
            type="file"
            multiple
            accept=".pdf,.docx,.html,.htm,.md,.markdown,.txt"
            aria-label="Add documents"
            className="visually-hidden"
            onChange={(event) => {
              if (event.target.files) void upload(event.target.files);
              event.target.value = "";
            }}
          />
        </label>
      </div>
      <ul className="kb-document-list">
        {documents.map((document) => (
          <li key={document.id} data-state={document.state}>
            <span className="name">{document.name}</span>
            <span className={`state ${document.state}`} role="status">
              {stateLabel(document)}
            </span>
            {document.state === "embedding" && document.total > 0 && <progress value={document.done} max={document.total} />}
            <button
              type="button"
              aria-label={`Delete ${document.name}`}
              onClick={() => api.deleteDocument(base.id, document.id).then(() => (reload(), onChanged()), (error) => notify(messageOf(error)))}
            >
              Delete
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

/** Knowledge bases: create, upload documents and watch them being indexed, delete. */
export function KnowledgePage() {
  const { api, notify } = useApp();
  const [bases, setBases] = useState<KnowledgeBase[]>([]);
  const [chosen, setChosen] = useState<string | null>(null);
  const [name, setName] = useState("");
  const reload = useCallback(() => {
    api.knowledgeBases().then(setBases, (error) => notify(messageOf(error)));
  }, [api, notify]);
  useEffect(reload, [reload]);
  const base = bases.find((b) => b.id === chosen) ?? null;

  return (
    <section className="knowledge" aria-label="Knowledge bases">
      <h1>Knowledge bases</h1>
      <form
        className="row"
        onSubmit={(event) => {
          event.preventDefault();
          if (!name.trim()) return;
          api.createKnowledgeBase(name.trim()).then((created) => {
            setName("");
            setChosen(created.id);
            reload();
          }, (error) => notify(messageOf(error)));
        }}
      >
        <label className="visually-hidden" htmlFor="kb-name">
          New knowledge base
        </label>
        <input id="kb-name" placeholder="New knowledge base" value={name} onChange={(event) => setName(event.target.value)} />
        <button type="submit" className="primary">
          Create
        </button>
      </form>
      <ul className="kb-list">
        {bases.map((b) => (
          <li key={b.id}>
            <button type="button" aria-current={b.id === chosen ? "true" : undefined} onClick={() => setChosen(b.id)}>
              {b.name}
            </button>
            <span className="meta">
              {b.documents} documents · {b.chunks} passages
            </span>
            <button
              type="button"
              aria-label={`Delete ${b.name}`}
              onClick={() => api.deleteKnowledgeBase(b.id).then(() => (setChosen(null), reload()), (error) => notify(messageOf(error)))}
            >
              Delete
            </button>
          </li>
        ))}
      </ul>
      {base && <Documents key={base.id} base={base} onChanged={reload} />}
    </section>
  );
}
