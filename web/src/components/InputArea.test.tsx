import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";

import { InputArea } from "./InputArea";

describe("the input area", () => {
  it("sends on Enter and starts a new line on Shift+Enter", async () => {
    const onSend = vi.fn();
    render(<InputArea busy={false} onSend={onSend} onStop={vi.fn()} />);
    const box = screen.getByLabelText("Message");
    await userEvent.type(box, "first line{Shift>}{Enter}{/Shift}second line");
    expect(onSend).not.toHaveBeenCalled();
    expect(box).toHaveProperty("value", "first line\nsecond line");
    await userEvent.type(box, "{Enter}");
    expect(onSend).toHaveBeenCalledExactlyOnceWith("first line\nsecond line", []);
    expect(box).toHaveProperty("value", "");
  });

  it("does not send blank text", async () => {
    const onSend = vi.fn();
    render(<InputArea busy={false} onSend={onSend} onStop={vi.fn()} />);
    await userEvent.type(screen.getByLabelText("Message"), "   {Enter}");
    expect(onSend).not.toHaveBeenCalled();
  });

  it("offers Stop instead of Send while an answer is generated", async () => {
    const onStop = vi.fn();
    const onSend = vi.fn();
    render(<InputArea busy onSend={onSend} onStop={onStop} />);
    expect(screen.queryByRole("button", { name: "Send" })).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: "Stop" }));
    expect(onStop).toHaveBeenCalledOnce();
    await userEvent.type(screen.getByLabelText("Message"), "not now{Enter}");
    expect(onSend).not.toHaveBeenCalled();
  });

  it("attaches picked images, shows them, sends them with the text, and refuses other files", async () => {
    const onSend = vi.fn();
    const onRefused = vi.fn();
    render(<InputArea busy={false} onSend={onSend} onStop={vi.fn()} onRefused={onRefused} />);
    const png = new File([new Uint8Array([0x89, 0x50, 0x4e, 0x47])], "dot.png", { type: "image/png" });
    const text = new File(["hello"], "notes.txt", { type: "text/plain" });
    await userEvent.upload(screen.getByLabelText("Image files"), [png, text], { applyAccept: false });
    expect(await screen.findByAltText("dot.png")).toBeTruthy();
    expect(onRefused).toHaveBeenCalledOnce();
    await userEvent.type(screen.getByLabelText("Message"), "What is this?{Enter}");
    expect(onSend).toHaveBeenCalledExactlyOnceWith("What is this?", [{ name: "dot.png", url: "data:image/png;base64,iVBORw==" }]);
    expect(screen.queryByAltText("dot.png")).toBeNull();
  });
});
