// The usage report as chart rows: one row per time bucket, one column per model.
import type { Granularity, UsageBucket } from "./api/types";

export interface Range {
  label: string;
  hours: number;
  granularity: Granularity;
}

export const RANGES: Range[] = [
  { label: "Last hour", hours: 1, granularity: "minute" },
  { label: "Last 24 hours", hours: 24, granularity: "hour" },
  { label: "Last 7 days", hours: 24 * 7, granularity: "day" },
  { label: "Last 30 days", hours: 24 * 30, granularity: "day" },
];

export type Row = { start: string } & Record<string, number | string>;

/** `value` of every bucket, pivoted: rows by bucket start (oldest first), a column per group. */
export function pivot(buckets: UsageBucket[], value: (bucket: UsageBucket) => number): { rows: Row[]; groups: string[] } {
  const groups = [...new Set(buckets.map((b) => b.group))].sort();
  const rows = new Map<string, Row>();
  for (const bucket of buckets) {
    const row = rows.get(bucket.start) ?? { start: bucket.start };
    row[bucket.group] = ((row[bucket.group] as number | undefined) ?? 0) + value(bucket);
    rows.set(bucket.start, row);
  }
  return { rows: [...rows.values()].sort((a, b) => a.start.localeCompare(b.start)), groups };
}

/** Per-group totals over the range, largest cost first. */
export function totalsByGroup(buckets: UsageBucket[]) {
  const totals = new Map<string, { group: string; requests: number; input_tokens: number; output_tokens: number; cost_usd: number; failed: number }>();
  for (const b of buckets) {
    const t = totals.get(b.group) ?? { group: b.group, requests: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0, failed: 0 };
    t.requests += b.requests;
    t.input_tokens += b.input_tokens;
    t.output_tokens += b.output_tokens;
    t.cost_usd += b.cost_usd;
    t.failed += b.failed;
    totals.set(b.group, t);
  }
  return [...totals.values()].sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests);
}

export function bucketLabel(start: string, granularity: Granularity): string {
  const at = new Date(start);
  if (granularity === "day") return at.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export const usd = (value: number) => `$${value < 0.01 && value > 0 ? value.toFixed(6) : value.toFixed(2)}`;
