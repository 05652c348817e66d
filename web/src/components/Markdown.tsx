import { memo, useRef, useState, type ComponentPropsWithoutRef } from "react";
import ReactMarkdown from "react-markdown";
import rehypeHighlight from "rehype-highlight";
import remarkGfm from "remark-gfm";

/** A code block with a copy button; the highlighted markup comes from rehype-highlight. */
function CodeBlock(props: ComponentPropsWithoutRef<"pre">) {
  const pre = useRef<HTMLPreElement>(null);
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    await navigator.clipboard.writeText(pre.current?.innerText ?? "");
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return (
    <div className="code-block">
      <button type="button" className="copy" onClick={() => void copy()} aria-label="Copy code">
        {copied ? "Copied" : "Copy"}
      </button>
      <pre ref={pre} {...props} />
    </div>
  );
}

const plugins = { remark: [remarkGfm], rehype: [[rehypeHighlight, { detect: true, ignoreMissing: true }]] as never };
const components = {
  pre: CodeBlock,
  a: (props: ComponentPropsWithoutRef<"a">) => <a {...props} target="_blank" rel="noopener noreferrer" />,
};

/** Markdown as HTML without raw HTML passing through (react-markdown escapes it). */
export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <ReactMarkdown remarkPlugins={plugins.remark} rehypePlugins={plugins.rehype} components={components}>
      {text}
    </ReactMarkdown>
  );
});
