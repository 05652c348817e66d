import { describe, expect, it } from "vitest";

import type { UsageBucket } from "./api/types";
import { pivot, totalsByGroup } from "./usage";

const latency = { count: 0, mean_ms: null, p50_ms: null, p95_ms: null, p99_ms: null };
function bucket(start: string, group: string, tokens: [number, number], cost: number): UsageBucket {
  return {
    start,
    group,
    requests: 1,
    completed: 1,
    failed: 0,
    cancelled: 0,
    errors: {},
    retries: 0,
    fallbacks: 0,
    input_tokens: tokens[0],
    output_tokens: tokens[1],
    cached_tokens: 0,
    cost_usd: cost,
    time_to_first_token: latency,
    duration: latency,
  };
}

describe("usage charts", () => {
  const buckets = [bucket("2026-01-01T01:00:00Z", "fast", [10, 5], 0.5), bucket("2026-01-01T00:00:00Z", "fast", [1, 1], 0.1), bucket("2026-01-01T01:00:00Z", "smart", [100, 50], 2)];

  it("pivots buckets into one row per time and a column per model, oldest first", () => {
    const { rows, groups } = pivot(buckets, (b) => b.input_tokens + b.output_tokens);
    expect(groups).toEqual(["fast", "smart"]);
    expect(rows).toEqual([
      { start: "2026-01-01T00:00:00Z", fast: 2 },
      { start: "2026-01-01T01:00:00Z", fast: 15, smart: 150 },
    ]);
  });

  it("sums each model over the range, costliest first", () => {
    expect(totalsByGroup(buckets).map((t) => [t.group, t.requests, t.input_tokens, t.cost_usd])).toEqual([
      ["smart", 1, 100, 2],
      ["fast", 2, 11, 0.6],
    ]);
  });
});
