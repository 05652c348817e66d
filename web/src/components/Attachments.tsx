import { useEffect, useState } from "react";

import type { Attachment } from "../api/types";

/** Reads a stored image's bytes (with the key, or by a share's token). */
export type LoadImage = (attachmentId: string) => Promise<Blob>;

/** A stored image, read by `load` (an `<img>` cannot send the key) and shown from a `blob:` URL. */
function StoredImage({ load, attachment, index }: { load: LoadImage; attachment: Attachment; index: number }) {
  const [src, setSrc] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let live = true;
    let url: string | null = null;
    load(attachment.id).then(
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
  }, [load, attachment.id]);
  if (failed) return <span className="attached missing">Image {index + 1} could not be loaded</span>;
  return src ? <img className="attached" src={src} alt={`Image ${index + 1}`} /> : <span className="attached loading">Image {index + 1}…</span>;
}

/** The images of a user message: stored ones shown, linked ones (other sites') as links, not loaded. */
export function Attachments({ load, attachments }: { load: LoadImage; attachments: Attachment[] }) {
  return (
    <div className="attachments-shown" aria-label="Images">
      {attachments.map((attachment, index) =>
        attachment.url ? (
          <a key={attachment.id} className="attached link" href={attachment.url} target="_blank" rel="noreferrer noopener">
            Image {index + 1}: {attachment.url}
          </a>
        ) : (
          <StoredImage key={attachment.id} load={load} attachment={attachment} index={index} />
        ),
      )}
    </div>
  );
}
