import { Fragment, type ReactNode } from "react";

/** `text` with its `[start, end)` ranges marked. */
export function Highlighted({ text, ranges }: { text: string; ranges: [number, number][] }) {
  const parts: ReactNode[] = [];
  let at = 0;
  for (const [start, end] of [...ranges].sort((a, b) => a[0] - b[0])) {
    if (start < at) continue;
    parts.push(<Fragment key={`t${at}`}>{text.slice(at, start)}</Fragment>, <mark key={`m${start}`}>{text.slice(start, end)}</mark>);
    at = end;
  }
  parts.push(<Fragment key={`t${at}`}>{text.slice(at)}</Fragment>);
  return <>{parts}</>;
}
