// The gateway's native API bodies (mirrors `chatbot_contracts.conversations` and `.usage`).

export type Role = "user" | "assistant" | "system" | "tool";
export type MessageStatus = "complete" | "streaming" | "cancelled" | "failed";

export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cost_usd: number;
  estimated: boolean;
}

/** An image shown with a user message: stored (`url` null, read with the key) or linked by its https URL. */
export interface Attachment {
  id: string;
  media_type: string;
  size: number;
  url: string | null;
}

export interface Message {
  id: string;
  parent_id: string | null;
  role: Role;
  content: string;
  status: MessageStatus;
  model: string | null;
  error: string | null;
  usage: TokenUsage | null;
  request_id: string | null;
  created_at: string;
  /** This message and its siblings (same parent), oldest first. */
  siblings: string[];
  /** 1-based place among `siblings`. */
  position: number;
  attachments?: Attachment[];
  /** A grounded answer's passages, numbered as it cites them. */
  sources?: Source[];
  /** Citation numbers in the answer that name no source. */
  unknown_citations?: number[];
}

export interface ConversationSummary {
  id: string;
  title: string;
  model: string | null;
  system_prompt: string | null;
  tags: string[];
  pinned: boolean;
  archived: boolean;
  active_leaf_id: string | null;
  created_at: string;
  updated_at: string;
  knowledge_base_ids?: string[];
}

export interface Conversation extends ConversationSummary {
  messages: Message[];
  active_path: string[];
}

export interface ConversationPage {
  items: ConversationSummary[];
  next_cursor: string | null;
}

export type ConversationPatch = Partial<Pick<ConversationSummary, "title" | "tags" | "pinned" | "archived" | "model" | "system_prompt" | "knowledge_base_ids">>;

export interface SearchHit {
  conversation_id: string;
  conversation_title: string;
  message_id: string | null;
  role: string | null;
  snippet: string;
  /** `[start, end)` ranges of `snippet` that match. */
  highlights: [number, number][];
  on_active_branch: boolean;
  branch_leaf_id: string | null;
}

export interface Share {
  token: string;
  url: string;
  created_at: string;
}

export interface SharedConversation {
  title: string;
  messages: { role: string; content: string; model: string | null; created_at: string; attachments?: Attachment[] }[];
  shared_at: string;
}

export interface ModelInfo {
  id: string;
  owned_by: string;
  /** `embedding` models serve /v1/embeddings only: not offered for chat. */
  mode?: "chat" | "embedding";
}

export interface Latency {
  count: number;
  mean_ms: number | null;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
}

export interface UsageTotals {
  requests: number;
  completed: number;
  failed: number;
  cancelled: number;
  errors: Record<string, number>;
  retries: number;
  fallbacks: number;
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cost_usd: number;
  time_to_first_token: Latency;
  duration: Latency;
}

export interface UsageBucket extends UsageTotals {
  start: string;
  group: string;
}

export type Granularity = "minute" | "hour" | "day";

export interface UsageReport {
  start: string;
  end: string;
  group_by: string;
  granularity: Granularity;
  data: UsageBucket[];
  totals: UsageTotals;
}

export interface TurnParams {
  temperature?: number;
  max_tokens?: number;
}

/** `POST …/messages`: no `parent_id` continues the active leaf; `null` starts a new root (an edit of the first question). */
export interface NewMessage {
  content: string;
  parent_id?: string | null;
  model?: string | null;
  params?: TurnParams;
  /** `data:` URLs of images shown with the message. */
  images?: { url: string }[];
}

export interface Source {
  number: number;
  knowledge_base_id: string;
  document_id: string;
  document_name: string;
  page: number | null;
  heading: string;
  start: number;
  end: number;
  score: number;
  text: string;
}

export interface KnowledgeBase {
  id: string;
  name: string;
  embedding_model: string;
  documents: number;
  chunks: number;
  created_at: string;
  updated_at: string;
}

export type DocumentState = "queued" | "extracting" | "embedding" | "ready" | "failed";

export interface KbDocument {
  id: string;
  knowledge_base_id: string;
  name: string;
  media_type: string;
  size: number;
  state: DocumentState;
  done: number;
  total: number;
  pages: number | null;
  chunks: number;
  error: string | null;
  created_at: string;
}

export interface DocumentText {
  id: string;
  name: string;
  text: string;
}
