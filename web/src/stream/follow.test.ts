import { describe, expect, it, vi } from "vitest";

import { ApiError } from "../api/client";
import { applyEvent, newAnswer, type NativeEvent } from "./events";
import { followStream, StreamLost } from "./follow";
import { ControlledStream, frame, START, streamOf } from "./testing";

const noWait = () => Promise.resolve();

function collector() {
  const events: NativeEvent[] = [];
  const ids: string[] = [];
  return {
    events,
    ids,
    onEvent: (event: NativeEvent, id: string) => {
      events.push(event);
      ids.push(id);
    },
    text: () => events.reduce(applyEvent, newAnswer()).text,
  };
}

describe("following a turn's stream", () => {
  it("parses events split anywhere across network chunks", async () => {
    const wire = frame("1-0", START) + frame("1-1", { type: "delta", text: "Hello, " }) + frame("2-0", { type: "delta", text: "world" }) + frame("3-0", { type: "done", reason: "stop" });
    const stream = new ControlledStream();
    for (let at = 0; at < wire.length; at += 7) stream.write(wire.slice(at, at + 7));
    stream.end();
    const seen = collector();
    const done = await followStream(() => Promise.resolve(stream.response), vi.fn(), seen.onEvent, { sleep: noWait });
    expect(done).toBe(true);
    expect(seen.text()).toBe("Hello, world");
    expect(seen.ids).toEqual(["1-0", "1-1", "2-0", "3-0"]);
  });

  it("resumes after the last event id when the connection drops, without losing or repeating text", async () => {
    const first = new ControlledStream();
    first.write(frame("1-0", START) + frame("2-0", { type: "delta", text: "one " }) + frame("3-0", { type: "delta", text: "two " }));
    first.fail();
    // The resumed stream overlaps: the gateway replays from Last-Event-ID, and an entry already seen must not count twice.
    const resume = vi.fn().mockResolvedValue(streamOf(frame("3-0", { type: "delta", text: "two " }) + frame("4-0", { type: "delta", text: "three" }) + frame("5-0", { type: "done", reason: "stop" })));
    const seen = collector();
    const reconnects: number[] = [];
    const done = await followStream(() => Promise.resolve(first.response), resume, seen.onEvent, { sleep: noWait, onReconnect: (n) => reconnects.push(n) });
    expect(done).toBe(true);
    expect(resume).toHaveBeenCalledExactlyOnceWith("req-1", "3-0");
    expect(seen.text()).toBe("one two three");
    expect(reconnects).toEqual([1]);
  });

  it("resumes a stream that ends early (a gateway shutting down) the same way", async () => {
    const resume = vi
      .fn()
      .mockRejectedValueOnce(new TypeError("Failed to fetch"))
      .mockResolvedValueOnce(streamOf(frame("2-0", { type: "delta", text: "rest" }) + frame("3-0", { type: "done", reason: "stop" })));
    const seen = collector();
    const opened = streamOf(frame("1-0", START) + frame("1-1", { type: "delta", text: "first " }));
    await followStream(() => Promise.resolve(opened), resume, seen.onEvent, { sleep: noWait });
    expect(resume.mock.calls).toEqual([
      ["req-1", "1-1"],
      ["req-1", "1-1"],
    ]);
    expect(seen.text()).toBe("first rest");
  });

  it("takes the request id from the response header when the start event was not read", async () => {
    const resume = vi.fn().mockResolvedValue(streamOf(frame("1-0", { type: "done", reason: "stop" })));
    const first = new ControlledStream({ "x-request-id": "from-header" });
    first.fail();
    await followStream(() => Promise.resolve(first.response), resume, () => undefined, { sleep: noWait });
    expect(resume).toHaveBeenCalledWith("from-header", "0-0");
  });

  it("passes a refusal on at once, without retrying", async () => {
    const refusal = new ApiError(503, "the queue is full; retry after 2 s", "queue_full");
    const resume = vi.fn();
    await expect(followStream(() => Promise.reject(refusal), resume, () => undefined, { sleep: noWait })).rejects.toBe(refusal);
    expect(resume).not.toHaveBeenCalled();
  });

  it("stops on an expired stream (410) instead of retrying", async () => {
    const first = streamOf(frame("1-0", START));
    const gone = new ApiError(410, "the events of request req-1 have expired", "stream_expired");
    const resume = vi.fn().mockRejectedValue(gone);
    await expect(followStream(() => Promise.resolve(first), resume, () => undefined, { sleep: noWait })).rejects.toBe(gone);
    expect(resume).toHaveBeenCalledTimes(1);
  });

  it("gives up after the allowed reconnections, saying so", async () => {
    const resume = vi.fn().mockRejectedValue(new TypeError("Failed to fetch"));
    const first = streamOf(frame("1-0", START));
    await expect(followStream(() => Promise.resolve(first), resume, () => undefined, { sleep: noWait, maxReconnects: 3 })).rejects.toThrow(StreamLost);
    expect(resume).toHaveBeenCalledTimes(3);
  });

  it("waits as the server's retry hint says after the first quick try", async () => {
    const waits: number[] = [];
    const resume = vi
      .fn()
      .mockRejectedValueOnce(new TypeError("down"))
      .mockRejectedValueOnce(new TypeError("down"))
      .mockResolvedValue(streamOf(frame("2-0", { type: "done", reason: "stop" })));
    const first = streamOf("retry: 3000\n" + frame("1-0", START));
    await followStream(() => Promise.resolve(first), resume, () => undefined, { sleep: (ms) => (waits.push(ms), Promise.resolve()) });
    expect(waits).toEqual([100, 3000, 6000]);
  });

  it("stops reading when aborted", async () => {
    const controller = new AbortController();
    const first = new ControlledStream();
    first.write(frame("1-0", START));
    const reading = followStream(() => Promise.resolve(first.response), vi.fn(), () => controller.abort(), { signal: controller.signal, sleep: noWait });
    await new Promise((resolve) => setTimeout(resolve, 10));
    first.fail();
    await expect(reading).resolves.toBe(false);
  });
});
