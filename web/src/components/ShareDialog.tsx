import { useEffect, useRef, useState } from "react";

import type { Share } from "../api/types";
import { messageOf, useApp } from "../context";

/** Create or revoke a read-only link to a snapshot of the conversation's shown path. */
export function ShareDialog({ conversationId, onClose }: { conversationId: string; onClose: () => void }) {
  const { api } = useApp();
  const dialog = useRef<HTMLDialogElement>(null);
  const [share, setShare] = useState<Share | null>(null);
  const [status, setStatus] = useState("");

  useEffect(() => {
    const element = dialog.current;
    if (element && !element.open) element.showModal?.();
    return () => element?.close?.();
  }, []);

  const act = async (what: () => Promise<void>) => {
    try {
      await what();
    } catch (error) {
      setStatus(messageOf(error));
    }
  };
  const create = () =>
    act(async () => {
      setShare(await api.share(conversationId));
      setStatus("Anyone with the link can read the conversation as it is now.");
    });
  const revoke = () =>
    act(async () => {
      await api.revokeShare(conversationId);
      setShare(null);
      setStatus("The link no longer works.");
    });
  const copy = () => act(async () => navigator.clipboard.writeText(share?.url ?? "").then(() => setStatus("Link copied.")));

  return (
    <dialog ref={dialog} className="dialog" aria-labelledby="share-title" onClose={onClose} onCancel={onClose}>
      <h2 id="share-title">Share a read-only link</h2>
      {share && (
        <p>
          <label htmlFor="share-url">Link</label>
          <input id="share-url" readOnly value={share.url} onFocus={(e) => e.currentTarget.select()} />
        </p>
      )}
      <p role="status" className="muted">
        {status || "A new link replaces the previous one; revoking turns it off."}
      </p>
      <div className="row">
        <button type="button" className="primary" onClick={() => void create()}>
          {share ? "New link" : "Create link"}
        </button>
        {share && (
          <button type="button" onClick={() => void copy()}>
            Copy link
          </button>
        )}
        <button type="button" onClick={() => void revoke()}>
          Revoke
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </dialog>
  );
}
