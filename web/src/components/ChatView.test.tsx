import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";

import type { Api } from "../api/client";
import type { Conversation } from "../api/types";
import { renderInApp } from "../rendered";
import { branched, message } from "../fixtures";
import { ControlledStream, frame } from "../stream/testing";
import { ChatView } from "./ChatView";

// Count how often each text is rendered as Markdown: history must not re-render per token.
const renders = new Map<string, number>();
vi.mock("./Markdown", () => ({
  Markdown: ({ text }: { text: string }) => {
    renders.set(text, (renders.get(text) ?? 0) + 1);
    return <p>{text}</p>;
  },
}));

function fakeApi(overrides: Partial<Record<keyof Api, unknown>>): Api {
  return { cancel: vi.fn().mockResolvedValue({ status: "cancelling" }), knowledgeBases: vi.fn().mockResolvedValue([]), ...overrides } as unknown as Api;
}

function show(api: Api, conversationId = "c1") {
  return renderInApp(<ChatView conversationId={conversationId} focusId={null} />, api, [
    { id: "fake", owned_by: "openai" },
    { id: "other", owned_by: "openai" },
  ]);
}

beforeEach(() => renders.clear());

describe("branches", () => {
  it("shows which version is shown and switches to a sibling's newest leaf", async () => {
    const conversation = branched();
    const switched: Conversation = { ...conversation, active_path: ["q1", "a1b"], active_leaf_id: "a1b" };
    const setActiveLeaf = vi.fn().mockResolvedValue(switched);
    show(fakeApi({ conversation: vi.fn().mockResolvedValue(conversation), setActiveLeaf }));

    const question = await screen.findByText("Edited question");
    const nav = within(question.closest("article")!);
    expect(nav.getByText("2 / 2")).toBeTruthy();
    await userEvent.click(nav.getByRole("button", { name: "Previous version" }));
    expect(setActiveLeaf).toHaveBeenCalledWith("c1", "a1b");
    expect(await screen.findByText("Regenerated answer")).toBeTruthy();
    expect(within(screen.getByText("First question").closest("article")!).getByText("1 / 2")).toBeTruthy();
  });

  it("sends an edited question as a sibling (same parent)", async () => {
    const conversation = branched();
    const stream = new ControlledStream();
    const sendMessage = vi.fn().mockResolvedValue(stream.response);
    show(fakeApi({ conversation: vi.fn().mockResolvedValue(conversation), sendMessage }));
    const question = (await screen.findByText("Edited question")).closest("article")!;
    await userEvent.click(within(question).getByRole("button", { name: "Edit" }));
    const box = within(question).getByLabelText("Edit your message");
    await userEvent.clear(box);
    await userEvent.type(box, "Third version{Enter}");
    expect(sendMessage).toHaveBeenCalledWith("c1", { content: "Third version", parent_id: null, model: "fake" }, expect.anything());
  });
});

describe("a streamed answer", () => {
  it("grows token by token without re-rendering the history, and Stop cancels it", async () => {
    const before: Conversation = {
      ...branched(),
      active_path: ["q1", "a1"],
      messages: [message("q1", null, "user", ["q1"], "2026-01-01T00:00:00Z", "Earlier question"), message("a1", "q1", "assistant", ["a1"], "2026-01-01T00:00:01Z", "Earlier answer")],
    };
    const stored: Conversation = {
      ...before,
      active_path: ["q1", "a1", "q2", "a2"],
      messages: [...before.messages, message("q2", "a1", "user", ["q2"], "2026-01-01T00:00:02Z", "New question"), { ...message("a2", "q2", "assistant", ["a2"], "2026-01-01T00:00:03Z", ""), status: "streaming", request_id: "req-9" }],
    };
    const conversation = vi.fn().mockResolvedValueOnce(before).mockResolvedValue(stored);
    const stream = new ControlledStream();
    const cancel = vi.fn().mockResolvedValue({ status: "cancelling" });
    show(fakeApi({ conversation, sendMessage: vi.fn().mockResolvedValue(stream.response), cancel }));
    await screen.findByText("Earlier answer");

    await userEvent.type(screen.getByLabelText("Message"), "New question{Enter}");
    expect(screen.getByText("New question")).toBeTruthy();
    await act(async () => stream.write(frame("1-0", { type: "start", request_id: "req-9", conversation_id: "c1", user_message_id: "q2", assistant_message_id: "a2" }) + frame("1-1", { type: "queued", position: 3 })));
    expect(await screen.findByText("Queued (3 ahead)")).toBeTruthy();
    await act(async () => stream.write(frame("2-0", { type: "started", model: "fake", provider: "openai" })));
    expect(await screen.findByText("fake is thinking…")).toBeTruthy();

    // Past the start (the history is shown once more, locked), tokens re-render the answer alone.
    let text = "";
    let historyRenders = 0;
    for (const word of ["Tokens ", "appear ", "one ", "by ", "one."]) {
      text += word;
      await act(async () => stream.write(frame(`3-${text.length}`, { type: "delta", text: word })));
      expect(await screen.findByText(text.trim())).toBeTruthy();
      historyRenders ||= renders.get("Earlier answer")!;
    }
    expect(renders.get("Earlier answer")).toBe(historyRenders);
    expect(renders.get("Tokens appear one by one.")).toBe(1);

    await userEvent.click(screen.getByRole("button", { name: "Stop" }));
    expect(cancel).toHaveBeenCalledWith("req-9");
  });

  it("shows a refusal with a retry that sends the question again", async () => {
    const conversation = branched();
    const { ApiError } = await import("../api/client");
    const sendMessage = vi.fn().mockRejectedValueOnce(new ApiError(503, "the queue is full, retry in 2 s", "queue_full")).mockReturnValue(new Promise(() => undefined));
    show(fakeApi({ conversation: vi.fn().mockResolvedValue(conversation), sendMessage }));
    await screen.findByText("Edited question");
    await userEvent.type(screen.getByLabelText("Message"), "Are you there?{Enter}");
    expect(await screen.findByRole("alert")).toHaveProperty("textContent", expect.stringContaining("the queue is full"));
    await userEvent.click(screen.getByRole("button", { name: "Retry" }));
    await waitFor(() => expect(sendMessage).toHaveBeenCalledTimes(2));
    expect(sendMessage.mock.calls[1]![1]).toMatchObject({ content: "Are you there?" });
  });
});


describe("regenerating", () => {
  it("hides the answer being replaced until the new one starts, then streams it", async () => {
    const conversation = branched();
    const stream = new ControlledStream();
    const regenerate = vi.fn().mockResolvedValue(stream.response);
    show(fakeApi({ conversation: vi.fn().mockResolvedValue(conversation), regenerate }));
    const answer = (await screen.findByText("Answer to the edit")).closest("article")!;
    await userEvent.click(within(answer).getByRole("button", { name: "Regenerate" }));
    expect(regenerate).toHaveBeenCalledWith("c1", "a2", "fake", expect.anything());
    expect(screen.queryByText("Answer to the edit")).toBeNull();
    expect(screen.getByText("Edited question")).toBeTruthy();
    expect(await screen.findByText("Sending…")).toBeTruthy();
    await act(async () => stream.write(frame("1-0", { type: "delta", text: "A fresh answer" })));
    expect(await screen.findByText("A fresh answer")).toBeTruthy();
  });
});
