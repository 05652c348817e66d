import { useEffect, useState } from "react";

import type { Attachment } from "../api/types";
import { useApp } from "../context";

/** A stored image, read with the key (an `<img>` cannot send it) and shown from a `blob:` URL. */
function StoredImage({ conversationId, attachment, index }: { conversationId: string; attachment: Attachment; index: number }) {
  const { api } = useApp();
  const [src, setSrc] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let live = true;
    let url: string | null = null;
    api.attachment(conversationId, attachment.id).then(
      (blob) => {
        if (!live) return;
        url = URL.createObjectURL(blob);
        setSrc(url);
      },
      () => live && setFailed(true),
    );
    return () => {
      live = false;
      if (url) URL.revokeObjectURL(url);
    };
  }, [api, conversationId, attachment.id]);
  if (failed) return <span className="attached missing">Image {index + 1} could not be loaded</span>;
  return src ? <img className="attached" src={src} alt={`Image ${index + 1}`} /> : <span className="attached loading">Image {index + 1}…</span>;
}

/** The images of a user message: stored ones shown, linked ones (other sites') as links, not loaded. */
export function Attachments({ conversationId, attachments }: { conversationId: string; attachments: Attachment[] }) {
  return (
    <div className="attachments-shown" aria-label="Images">
      {attachments.map((attachment, index) =>
        attachment.url ? (
          <a key={attachment.id} className="attached link" href={attachment.url} target="_blank" rel="noreferrer noopener">
            Image {index + 1}: {attachment.url}
          </a>
        ) : (
          <StoredImage key={attachment.id} conversationId={conversationId} attachment={attachment} index={index} />
        ),
      )}
    </div>
  );
}
