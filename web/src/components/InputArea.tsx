import { useRef, useState, type ClipboardEvent, type DragEvent, type FormEvent, type KeyboardEvent } from "react";

/** An image to send with the message, read into a `data:` URL. */
export interface Picked {
  name: string;
  url: string;
}

export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/** The gateway's default bound on one image (`CHATBOT_MAX_IMAGE_BYTES`); larger ones are refused here, before sending. */
export const MAX_IMAGE_BYTES = 3_000_000;
export const MAX_IMAGES = 16;

interface Props {
  busy: boolean;
  onSend: (content: string, images: Picked[]) => void;
  onStop: () => void;
  disabled?: boolean;
  /** Say why a file was not attached. */
  onRefused?: (why: string) => void;
}

function readAsDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

/** Enter sends, Shift+Enter starts a new line; Stop while an answer is generated. Images come by the picker, by pasting
 * or by dropping them on the box. */
export function InputArea({ busy, onSend, onStop, disabled = false, onRefused }: Props) {
  const [text, setText] = useState("");
  const [images, setImages] = useState<Picked[]>([]);
  const [dragging, setDragging] = useState(false);
  const picker = useRef<HTMLInputElement>(null);

  const attach = async (files: Iterable<File>) => {
    const added: Picked[] = [];
    for (const file of files) {
      if (!IMAGE_TYPES.includes(file.type)) {
        onRefused?.(`${file.name || "That file"} is not an image this chat takes (PNG, JPEG, GIF or WebP)`);
        continue;
      }
      if (file.size > MAX_IMAGE_BYTES) {
        onRefused?.(`${file.name || "The image"} is larger than ${MAX_IMAGE_BYTES / 1_000_000} MB`);
        continue;
      }
      added.push({ name: file.name || "pasted image", url: await readAsDataUrl(file) });
    }
    if (added.length) setImages((now) => [...now, ...added].slice(0, MAX_IMAGES));
  };

  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    const content = text.trim();
    if (!content || busy || disabled) return;
    onSend(content, images);
    setText("");
    setImages([]);
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  };
  const onPaste = (event: ClipboardEvent<HTMLTextAreaElement>) => {
    const files = Array.from(event.clipboardData.files);
    if (files.length) {
      event.preventDefault();
      void attach(files);
    }
  };
  const onDrop = (event: DragEvent<HTMLFormElement>) => {
    event.preventDefault();
    setDragging(false);
    void attach(Array.from(event.dataTransfer.files));
  };
  return (
    <form
      className={`input-area${dragging ? " dragging" : ""}`}
      onSubmit={submit}
      onDragOver={(e) => {
        e.preventDefault();
        setDragging(true);
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={onDrop}
    >
      {images.length > 0 && (
        <ul className="attachments" aria-label="Images to send">
          {images.map((image, index) => (
            <li key={`${index}-${image.name}`}>
              <img src={image.url} alt={image.name} />
              <button type="button" aria-label={`Remove ${image.name}`} onClick={() => setImages((now) => now.filter((_, i) => i !== index))}>
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      <label htmlFor="prompt" className="visually-hidden">
        Message
      </label>
      <textarea
        id="prompt"
        value={text}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKeyDown}
        onPaste={onPaste}
        placeholder="Send a message (Enter sends, Shift+Enter for a new line)"
        rows={Math.min(8, Math.max(1, text.split("\n").length))}
        disabled={disabled}
      />
      <input
        ref={picker}
        type="file"
        accept={IMAGE_TYPES.join(",")}
        multiple
        hidden
        aria-label="Image files"
        onChange={(e) => {
          void attach(Array.from(e.target.files ?? []));
          e.target.value = "";
        }}
      />
      <button type="button" className="attach" onClick={() => picker.current?.click()} disabled={disabled} title="Attach images (or paste or drop them)">
        Attach images
      </button>
      {busy ? (
        <button type="button" className="stop" onClick={onStop}>
          Stop
        </button>
      ) : (
        <button type="submit" className="primary" disabled={!text.trim() || disabled}>
          Send
        </button>
      )}
    </form>
  );
}
