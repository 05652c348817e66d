// Follow one answer's event stream to its `done`, across dropped connections.
//
// The turn is POSTed once; if the connection drops, the rest is read from the resume endpoint
// after the last event id seen (`Last-Event-ID`), so no text is lost or repeated. The browser's
// EventSource cannot send the API key, hence this fetch-based reader.
import { createParser, type EventSourceMessage } from "eventsource-parser";

import { ApiError } from "../api/client";
import { isAfter, type NativeEvent } from "./events";

export interface FollowOptions {
  /** Aborting stops reading (the generation goes on server-side; cancel it separately). */
  signal?: AbortSignal;
  /** Reconnections in a row without a new event before giving up. */
  maxReconnects?: number;
  /** Called when the connection dropped and a reconnection is about to be tried. */
  onReconnect?: (attempt: number) => void;
  sleep?: (ms: number) => Promise<void>;
}

export type Open = () => Promise<Response>;
export type Resume = (requestId: string, lastEventId: string) => Promise<Response>;

export class StreamLost extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StreamLost";
  }
}

const wait = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Read events from `open()`, then from `resume()` after every drop, until `done`.
 * Resolves `true` at `done`, `false` when aborted; rejects with the gateway's refusal (an
 * `ApiError`) or `StreamLost` after `maxReconnects` fruitless tries.
 */
export async function followStream(open: Open, resume: Resume, onEvent: (event: NativeEvent, id: string) => void, options: FollowOptions = {}): Promise<boolean> {
  const { signal, maxReconnects = 8, onReconnect, sleep = wait } = options;
  let requestId: string | null = null;
  let lastId = "0-0";
  let retryMs = 1000;
  let fruitless = 0;
  let done = false;

  const handle = (message: EventSourceMessage) => {
    if (message.id) {
      if (!isAfter(message.id, lastId)) return; // already seen (a replay overlapping a drop)
      lastId = message.id;
    }
    const event = JSON.parse(message.data) as NativeEvent;
    if (event.type === "start") requestId = event.request_id;
    fruitless = 0;
    onEvent(event, message.id ?? "");
    if (event.type === "done") done = true;
  };
  // The first try comes at once (a dropped connection is usually back); later ones follow the server's `retry:` hint.
  const backOff = async () => {
    if (++fruitless > maxReconnects) throw new StreamLost(`the stream could not be resumed after ${maxReconnects} tries`);
    onReconnect?.(fruitless);
    await sleep(fruitless === 1 ? 100 : Math.min(retryMs * (fruitless - 1), 10_000));
  };
  const parser = createParser({ onEvent: handle, onRetry: (ms) => (retryMs = ms) });

  for (let connection = 0; !done; connection++) {
    if (signal?.aborted) return false;
    let response: Response;
    try {
      if (connection === 0) response = await open();
      else if (requestId === null) throw new StreamLost("the connection dropped before the gateway named the request");
      else response = await resume(requestId, lastId);
    } catch (error) {
      if (signal?.aborted) return false;
      if (error instanceof ApiError || error instanceof StreamLost || connection === 0) throw error;
      await backOff();
      continue;
    }
    requestId ??= response.headers.get("x-request-id");
    parser.reset();
    try {
      await readInto(response, (chunk) => parser.feed(chunk));
    } catch {
      if (signal?.aborted) return false;
    }
    if (done || signal?.aborted) break;
    await backOff();
  }
  return done;
}

async function readInto(response: Response, feed: (chunk: string) => void): Promise<void> {
  if (!response.body) throw new StreamLost("the response has no body");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    feed(value);
  }
}
