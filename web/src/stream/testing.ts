// Test helpers: native event streams as a gateway sends them.
import type { NativeEvent } from "./events";

export function frame(id: string, event: NativeEvent): string {
  return `id: ${id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** A streamed response whose body the test writes piece by piece, and may cut (`fail`) like a dropped connection. */
export class ControlledStream {
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  readonly response: Response;
  private readonly encoder = new TextEncoder();

  constructor(headers: Record<string, string> = {}) {
    const body = new ReadableStream<Uint8Array>({ start: (controller) => void (this.controller = controller) });
    this.response = new Response(body, { status: 200, headers: { "content-type": "text/event-stream", ...headers } });
  }

  write(text: string): void {
    this.controller.enqueue(this.encoder.encode(text));
  }

  end(): void {
    this.controller.close();
  }

  /** Cut the connection once what was written has been read (erroring a stream discards its unread chunks). */
  fail(): void {
    setTimeout(() => this.controller.error(new TypeError("network error")), 5);
  }
}

export function streamOf(text: string, headers: Record<string, string> = {}): Response {
  const stream = new ControlledStream(headers);
  stream.write(text);
  stream.end();
  return stream.response;
}

export const START: NativeEvent = { type: "start", request_id: "req-1", conversation_id: "c1", user_message_id: "u1", assistant_message_id: "a1" };
