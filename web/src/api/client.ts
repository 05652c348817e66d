// A typed client of the gateway's API: one key, JSON in and out, errors that say what the gateway said.
import type {
  Conversation,
  ConversationPage,
  ConversationPatch,
  ConversationSummary,
  DocumentText,
  Granularity,
  KbDocument,
  KnowledgeBase,
  ModelInfo,
  NewMessage,
  SearchHit,
  Share,
  SharedConversation,
  UsageReport,
} from "./types";

/** A refusal of the gateway, in OpenAI's error format (`{"error": {"message", "type", "code", "param"}}`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = "ApiError";
  }

  static async of(response: Response): Promise<ApiError> {
    let message = `${response.status} ${response.statusText}`.trim();
    let code: string | null = null;
    try {
      const body = (await response.json()) as { error?: { message?: string; code?: string | null } };
      message = body.error?.message ?? message;
      code = body.error?.code ?? null;
    } catch {
      // not JSON: keep the status line
    }
    return new ApiError(response.status, message, code);
  }
}

type Query = Record<string, string | number | boolean | null | undefined>;

function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export class Api {
  constructor(
    readonly key: string,
    readonly baseUrl = "",
    private readonly fetcher: typeof fetch = (...args) => fetch(...args),
  ) {}

  /** A raw request with the key; the caller reads the body (streams) or `json` does. */
  async send(method: string, path: string, init: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.key}`, ...init.headers };
    if (init.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.fetcher(this.baseUrl + path, {
      method,
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
    });
    if (!response.ok) throw await ApiError.of(response);
    return response;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.send(method, path, { body });
    return (response.status === 204 ? undefined : await response.json()) as T;
  }

  models(): Promise<ModelInfo[]> {
    return this.json<{ data: ModelInfo[] }>("GET", "/v1/models").then((list) => list.data);
  }

  conversations(query: { tag?: string; archived?: boolean; limit?: number; cursor?: string | null } = {}): Promise<ConversationPage> {
    return this.json("GET", withQuery("/api/v1/conversations", query));
  }

  conversation(id: string): Promise<Conversation> {
    return this.json("GET", `/api/v1/conversations/${encodeURIComponent(id)}`);
  }

  createConversation(body: { model?: string | null; title?: string; knowledge_base_ids?: string[] } = {}): Promise<ConversationSummary> {
    return this.json("POST", "/api/v1/conversations", body);
  }

  changeConversation(id: string, patch: ConversationPatch): Promise<ConversationSummary> {
    return this.json("PATCH", `/api/v1/conversations/${encodeURIComponent(id)}`, patch);
  }

  /** A stored image of a conversation. */
  async attachment(conversationId: string, attachmentId: string): Promise<Blob> {
    const response = await this.send("GET", `/api/v1/conversations/${encodeURIComponent(conversationId)}/attachments/${encodeURIComponent(attachmentId)}`);
    return response.blob();
  }

  deleteConversation(id: string): Promise<void> {
    return this.json("DELETE", `/api/v1/conversations/${encodeURIComponent(id)}`);
  }

  setActiveLeaf(id: string, messageId: string): Promise<Conversation> {
    return this.json("PUT", `/api/v1/conversations/${encodeURIComponent(id)}/active-leaf`, { message_id: messageId });
  }

  fork(id: string, messageId: string): Promise<ConversationSummary> {
    return this.json("POST", `/api/v1/conversations/${encodeURIComponent(id)}/fork`, { message_id: messageId });
  }

  share(id: string): Promise<Share> {
    return this.json("POST", `/api/v1/conversations/${encodeURIComponent(id)}/share`);
  }

  revokeShare(id: string): Promise<void> {
    return this.json("DELETE", `/api/v1/conversations/${encodeURIComponent(id)}/share`);
  }

  search(q: string, limit = 20): Promise<SearchHit[]> {
    return this.json<{ hits: SearchHit[] }>("GET", withQuery("/api/v1/search", { q, limit })).then((r) => r.hits);
  }

  usage(query: { from: string; to: string; granularity: Granularity; group_by?: string }): Promise<UsageReport> {
    return this.json("GET", withQuery("/api/v1/usage", query));
  }

  cancel(requestId: string): Promise<{ request_id: string; status: string }> {
    return this.json("POST", `/api/v1/requests/${encodeURIComponent(requestId)}/cancel`);
  }

  knowledgeBases(): Promise<KnowledgeBase[]> {
    return this.json<{ items: KnowledgeBase[] }>("GET", "/api/v1/knowledge-bases").then((list) => list.items);
  }

  createKnowledgeBase(name: string): Promise<KnowledgeBase> {
    return this.json("POST", "/api/v1/knowledge-bases", { name });
  }

  deleteKnowledgeBase(id: string): Promise<void> {
    return this.json("DELETE", `/api/v1/knowledge-bases/${encodeURIComponent(id)}`);
  }

  documents(knowledgeBaseId: string): Promise<KbDocument[]> {
    return this.json<{ items: KbDocument[] }>("GET", `/api/v1/knowledge-bases/${encodeURIComponent(knowledgeBaseId)}/documents`).then((list) => list.items);
  }

  /** Upload a file as its bytes; indexing goes on in the background (`progress`). */
  async addDocument(knowledgeBaseId: string, file: File): Promise<{ document: KbDocument; duplicate: boolean }> {
    const path = withQuery(`/api/v1/knowledge-bases/${encodeURIComponent(knowledgeBaseId)}/documents`, { name: file.name });
    const response = await this.fetcher(this.baseUrl + path, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.key}`, "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    if (!response.ok) throw await ApiError.of(response);
    return response.json();
  }

  deleteDocument(knowledgeBaseId: string, documentId: string): Promise<void> {
    return this.json("DELETE", `/api/v1/knowledge-bases/${encodeURIComponent(knowledgeBaseId)}/documents/${encodeURIComponent(documentId)}`);
  }

  documentText(knowledgeBaseId: string, documentId: string): Promise<DocumentText> {
    return this.json("GET", `/api/v1/knowledge-bases/${encodeURIComponent(knowledgeBaseId)}/documents/${encodeURIComponent(documentId)}/text`);
  }

  /** The knowledge base's progress events (server-sent), as its documents are indexed. */
  progress(knowledgeBaseId: string, signal: AbortSignal): Promise<Response> {
    return this.send("GET", `/api/v1/knowledge-bases/${encodeURIComponent(knowledgeBaseId)}/events`, { signal, headers: sse });
  }

  /** Store a user turn and open its answer's event stream. */
  sendMessage(conversationId: string, body: NewMessage, signal?: AbortSignal): Promise<Response> {
    return this.send("POST", `/api/v1/conversations/${encodeURIComponent(conversationId)}/messages`, { body, signal, headers: sse });
  }

  regenerate(conversationId: string, messageId: string, model: string | null, signal?: AbortSignal): Promise<Response> {
    const path = `/api/v1/conversations/${encodeURIComponent(conversationId)}/messages/${encodeURIComponent(messageId)}/regenerate`;
    return this.send("POST", path, { body: model ? { model } : {}, signal, headers: sse });
  }

  /** A request's events after `lastEventId` (all of them from `0-0`), from any gateway. */
  resume(requestId: string, lastEventId: string, signal?: AbortSignal): Promise<Response> {
    return this.send("GET", `/api/v1/requests/${encodeURIComponent(requestId)}/events`, {
      signal,
      headers: { ...sse, "Last-Event-ID": lastEventId },
    });
  }
}

const sse = { Accept: "text/event-stream" };

/** A shared conversation needs no key. */
export async function readShared(token: string, fetcher: typeof fetch = fetch): Promise<SharedConversation> {
  const response = await fetcher(`/api/v1/shared/${encodeURIComponent(token)}`);
  if (!response.ok) throw await ApiError.of(response);
  return (await response.json()) as SharedConversation;
}

/** A stored image that a shared conversation shows (no key: the share's token is enough). */
export async function readSharedImage(token: string, attachmentId: string, fetcher: typeof fetch = fetch): Promise<Blob> {
  const response = await fetcher(`/api/v1/shared/${encodeURIComponent(token)}/attachments/${encodeURIComponent(attachmentId)}`);
  if (!response.ok) throw await ApiError.of(response);
  return response.blob();
}
