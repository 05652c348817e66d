import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";

import type { Api } from "../api/client";
import type { Source } from "../api/types";
import { renderInApp } from "../rendered";
import { Sources } from "./Sources";

const DOCUMENT = "Travel. Submit expenses within 45 days. Meals abroad are reimbursed at the daily rate.";

function source(number: number, passage: string, page: number | null): Source {
  const start = DOCUMENT.indexOf(passage);
  return {
    number,
    knowledge_base_id: "kb1",
    document_id: "d1",
    document_name: "handbook.pdf",
    page,
    heading: "Travel",
    start,
    end: start + passage.length,
    score: 0.03,
    text: passage,
  };
}

function show(sources: Source[], unknown: number[]) {
  const documentText = vi.fn().mockResolvedValue({ id: "d1", name: "handbook.pdf", text: DOCUMENT });
  renderInApp(<Sources sources={sources} unknown={unknown} />, { documentText } as unknown as Api);
  return documentText;
}

describe("sources", () => {
  it("opens a cited passage highlighted within its document's text", async () => {
    const documentText = show([source(1, "Submit expenses within 45 days.", 3), source(2, "Meals abroad", null)], []);

    expect(screen.getByRole("button", { name: "[2] handbook.pdf" })).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "[1] handbook.pdf, p. 3" }));

    const dialog = await screen.findByRole("dialog", { name: "Source 1: handbook.pdf, p. 3" });
    const mark = await within(dialog).findByText("Submit expenses within 45 days.");
    expect(mark.tagName).toBe("MARK");
    expect(dialog.textContent).toContain(DOCUMENT);
    expect(documentText).toHaveBeenCalledWith("kb1", "d1");
    await userEvent.click(within(dialog).getByRole("button", { name: "Close" }));
    expect(screen.queryByRole("dialog")).toBeNull();
  });

  it("flags a citation that names no source instead of linking it", () => {
    show([source(1, "Meals abroad", 3)], [4, 7]);

    expect(screen.getByRole("note").textContent).toBe("No such source: [4] [7]");
    expect(screen.getAllByRole("button").map((b) => b.textContent)).toEqual(["[1] handbook.pdf, p. 3"]);
  });
});
