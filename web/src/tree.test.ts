import { describe, expect, it } from "vitest";

import { branched } from "./fixtures";
import { activePath, leafUnder, siblingAt } from "./tree";

describe("the message tree", () => {
  it("shows the active path, root first", () => {
    expect(activePath(branched()).map((m) => m.id)).toEqual(["q1b", "a2"]);
  });

  it("switching to a sibling lands on its newest leaf", () => {
    expect(leafUnder(branched(), "q1")).toBe("a1b");
    expect(leafUnder(branched(), "a1")).toBe("a1");
    expect(leafUnder(branched(), "q1b")).toBe("a2");
  });

  it("steps between siblings and stops at the ends", () => {
    const [q1, , , q1b] = branched().messages;
    expect(siblingAt(q1b!, -1)).toBe("q1");
    expect(siblingAt(q1b!, 1)).toBeNull();
    expect(siblingAt(q1!, -1)).toBeNull();
  });
});
