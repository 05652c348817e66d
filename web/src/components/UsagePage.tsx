import { useEffect, useState } from "react";
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";

import type { UsageReport } from "../api/types";
import { messageOf, useApp } from "../context";
import { bucketLabel, pivot, RANGES, totalsByGroup, usd, type Row } from "../usage";

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

function Chart({ title, rows, groups, granularity, format }: { title: string; rows: Row[]; groups: string[]; granularity: UsageReport["granularity"]; format: (v: number) => string }) {
  return (
    <figure className="chart" aria-label={title}>
      <figcaption>{title}</figcaption>
      <ResponsiveContainer width="100%" height={240}>
        <BarChart data={rows}>
          <CartesianGrid strokeDasharray="3 3" stroke="var(--border)" />
          <XAxis dataKey="start" tickFormatter={(start: string) => bucketLabel(start, granularity)} stroke="var(--muted)" />
          <YAxis tickFormatter={(v: number) => format(v)} stroke="var(--muted)" width={96} />
          <Tooltip labelFormatter={(start) => new Date(String(start)).toLocaleString()} formatter={(v) => format(Number(v))} />
          <Legend />
          {groups.map((group, i) => (
            <Bar key={group} dataKey={group} stackId="models" fill={COLORS[i % COLORS.length]} isAnimationActive={false} />
          ))}
        </BarChart>
      </ResponsiveContainer>
    </figure>
  );
}

/** Tokens and cost over time by model, from `/api/v1/usage`. */
export function UsagePage() {
  const { api } = useApp();
  const [rangeIndex, setRangeIndex] = useState(1);
  const [report, setReport] = useState<UsageReport | null>(null);
  const [error, setError] = useState<string | null>(null);
  const range = RANGES[rangeIndex]!;

  useEffect(() => {
    let current = true;
    const to = new Date();
    const from = new Date(to.getTime() - range.hours * 3600_000);
    setError(null);
    api.usage({ from: from.toISOString(), to: to.toISOString(), granularity: range.granularity, group_by: "model" }).then(
      (r) => current && setReport(r),
      (e) => current && setError(messageOf(e)),
    );
    return () => {
      current = false;
    };
  }, [api, range]);

  const tokens = report ? pivot(report.data, (b) => b.input_tokens + b.output_tokens) : null;
  const cost = report ? pivot(report.data, (b) => b.cost_usd) : null;
  const totals = report?.totals;

  return (
    <main className="usage" aria-labelledby="usage-title">
      <div className="usage-head">
        <h1 id="usage-title">Usage</h1>
        <label>
          <span className="visually-hidden">Range</span>
          <select value={rangeIndex} onChange={(e) => setRangeIndex(Number(e.target.value))} aria-label="Range">
            {RANGES.map((r, i) => (
              <option key={r.label} value={i}>
                {r.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      {error && <p role="alert">{error}</p>}
      {totals && (
        <dl className="totals">
          <div>
            <dt>Requests</dt>
            <dd>{totals.requests}</dd>
          </div>
          <div>
            <dt>Tokens in / out</dt>
            <dd>
              {totals.input_tokens.toLocaleString()} / {totals.output_tokens.toLocaleString()}
            </dd>
          </div>
          <div>
            <dt>Cost</dt>
            <dd>{usd(totals.cost_usd)}</dd>
          </div>
          <div>
            <dt>Time to first token (p50)</dt>
            <dd>{totals.time_to_first_token.p50_ms === null ? "–" : `${Math.round(totals.time_to_first_token.p50_ms)} ms`}</dd>
          </div>
          <div>
            <dt>Failed</dt>
            <dd>{totals.failed}</dd>
          </div>
        </dl>
      )}
      {report && report.data.length === 0 && <p className="muted">No requests in this range yet.</p>}
      {report && tokens && cost && report.data.length > 0 && (
        <>
          <Chart title="Tokens by model" rows={tokens.rows} groups={tokens.groups} granularity={report.granularity} format={(v) => v.toLocaleString()} />
          <Chart title="Cost by model (USD)" rows={cost.rows} groups={cost.groups} granularity={report.granularity} format={usd} />
          <table className="by-model">
            <caption>By model</caption>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Requests</th>
                <th scope="col">Failed</th>
                <th scope="col">Input tokens</th>
                <th scope="col">Output tokens</th>
                <th scope="col">Cost</th>
              </tr>
            </thead>
            <tbody>
              {totalsByGroup(report.data).map((t) => (
                <tr key={t.group}>
                  <th scope="row">{t.group}</th>
                  <td>{t.requests}</td>
                  <td>{t.failed}</td>
                  <td>{t.input_tokens.toLocaleString()}</td>
                  <td>{t.output_tokens.toLocaleString()}</td>
                  <td>{usd(t.cost_usd)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </main>
  );
}
