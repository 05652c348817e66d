import { useCallback, useEffect, useMemo, useRef, useState } from "react";

import type { Conversation, Message, NewMessage } from "../api/types";
import { messageOf, useApp } from "../context";
import { useTurn } from "../hooks/useTurn";
import { activePath, leafUnder, siblingAt } from "../tree";
import { InputArea, type Picked } from "./InputArea";
import { MessageBubble, type MessageActions } from "./MessageBubble";
import { KnowledgeSelector } from "./KnowledgeSelector";
import { ModelSelector } from "./ModelSelector";
import { ShareDialog } from "./ShareDialog";
import { StreamingBubble } from "./StreamingBubble";

/** A first message typed on the new-chat page, sent once its conversation exists and is shown. */
const outbox = new Map<string, NewMessage>();

interface Props {
  conversationId: string | null;
  /** A message to scroll to and highlight (a search hit). */
  focusId: string | null;
}

export function ChatView({ conversationId, focusId }: Props) {
  const { api, models, navigate, notify, refreshConversations } = useApp();
  const [conversation, setConversation] = useState<Conversation | null>(null);
  const [missing, setMissing] = useState<string | null>(null);
  const [draftModel, setDraftModel] = useState<string | null>(null);
  const [draftBases, setDraftBases] = useState<string[]>([]);
  const [sharing, setSharing] = useState(false);
  const liveId = useRef<string | null>(null);
  const bottom = useRef<HTMLDivElement>(null);
  const following = useRef(true);

  const load = useCallback(async () => {
    if (!conversationId) return null;
    const loaded = await api.conversation(conversationId);
    setConversation(loaded);
    return loaded;
  }, [api, conversationId]);

  const onStored = useCallback(
    async (final: boolean) => {
      try {
        const loaded = await load();
        if (!final) return false;
        refreshConversations();
        return !loaded?.messages.some((m) => m.id === liveId.current && m.status === "streaming");
      } catch (error) {
        notify(messageOf(error));
        return true;
      }
    },
    [load, notify, refreshConversations],
  );
  const turn = useTurn(api, conversationId, onStored);
  liveId.current = turn.answer?.assistantMessageId ?? null;
  // Null until chosen: the gateway's default model (the one that can answer on this machine) applies.
  const model = conversation?.model ?? draftModel;

  // Load the conversation; an answer still streaming (a reload, another tab) is followed from its start.
  useEffect(() => {
    setConversation(null);
    setMissing(null);
    if (!conversationId) return;
    let current = true;
    api.conversation(conversationId).then(
      (loaded) => {
        if (!current) return;
        setConversation(loaded);
        const first = outbox.get(conversationId);
        outbox.delete(conversationId);
        const streaming = activePath(loaded).find((m) => m.role === "assistant" && m.status === "streaming" && m.request_id);
        if (first) turn.send(first);
        else if (streaming?.request_id) turn.resume(streaming.request_id);
      },
      (error) => current && setMissing(messageOf(error)),
    );
    return () => {
      current = false;
    };
    // `turn` changes with its answer; only a new conversation reloads.
  }, [api, conversationId]);

  // Keep the newest text in view unless the reader scrolled up.
  useEffect(() => {
    if (following.current && !focusId) bottom.current?.scrollIntoView?.({ block: "end" });
  }, [conversation, turn.answer?.text, turn.pending, focusId]);
  useEffect(() => {
    if (focusId && conversation) document.getElementById(`message-${focusId}`)?.scrollIntoView?.({ block: "center" });
  }, [focusId, conversation]);

  const state = useRef({ conversation, model, turn });
  state.current = { conversation, model, turn };
  const actions: MessageActions = useMemo(
    () => ({
      switchBranch: (message: Message, step: number) => {
        const { conversation } = state.current;
        const sibling = siblingAt(message, step);
        if (!conversation || !sibling) return;
        api.setActiveLeaf(conversation.id, leafUnder(conversation, sibling)).then(setConversation, (e) => notify(messageOf(e)));
      },
      edit: (message: Message, content: string) => state.current.turn.send({ content, parent_id: message.parent_id, model: state.current.model }),
      regenerate: (message: Message) => state.current.turn.regenerate(message.id, state.current.model),
      fork: (message: Message) => {
        const { conversation } = state.current;
        if (!conversation) return;
        api.fork(conversation.id, message.id).then(
          (fork) => {
            refreshConversations();
            navigate({ page: "chat", conversationId: fork.id, messageId: null });
          },
          (e) => notify(messageOf(e)),
        );
      },
    }),
    [api, navigate, notify, refreshConversations],
  );

  const send = async (content: string, picked: Picked[]) => {
    const images = picked.length ? picked.map((image) => ({ url: image.url })) : undefined;
    if (conversationId) {
      turn.send({ content, model, images });
      return;
    }
    try {
      const created = await api.createConversation({ model, knowledge_base_ids: draftBases });
      outbox.set(created.id, { content, model, images });
      refreshConversations();
      navigate({ page: "chat", conversationId: created.id, messageId: null });
    } catch (error) {
      notify(messageOf(error));
    }
  };

  const changeModel = (next: string) => {
    if (!conversation) return setDraftModel(next);
    api.changeConversation(conversation.id, { model: next }).then(
      (summary) => setConversation({ ...conversation, ...summary }),
      (e) => notify(messageOf(e)),
    );
  };

  const changeBases = (next: string[]) => {
    if (!conversation) return setDraftBases(next);
    api.changeConversation(conversation.id, { knowledge_base_ids: next }).then(
      (summary) => setConversation({ ...conversation, ...summary }),
      (e) => notify(messageOf(e)),
    );
  };

  const retry = () => {
    const { answer, pending } = turn;
    if (answer?.assistantMessageId) turn.regenerate(answer.assistantMessageId, model);
    else if (pending?.replacing) turn.regenerate(pending.replacing, model);
    else if (pending) turn.send({ content: pending.content, parent_id: pending.parentId, model });
  };

  if (missing) {
    return (
      <section className="chat empty-state">
        <p role="alert">{missing}</p>
      </section>
    );
  }

  const path = conversation ? activePath(conversation) : [];
  const { answer, pending } = turn;
  // Until the stream starts: an edited question hides the old branch below its parent, a regenerated answer hides itself.
  let shownUntil = path.length;
  const replaced = pending?.replacing ? path.findIndex((m) => m.id === pending.replacing) : -1;
  if (replaced >= 0) shownUntil = replaced;
  else if (pending && !pending.replacing && pending.parentId !== undefined) shownUntil = path.findIndex((m) => m.id === pending.parentId) + 1;
  const visible = path.slice(0, shownUntil);
  const question = pending && !pending.replacing ? pending : null;
  const liveInPath = answer?.assistantMessageId ? visible.some((m) => m.id === answer.assistantMessageId) : false;

  return (
    <section className="chat" aria-label="Conversation">
      <div className="chat-head">
        <h1 className="chat-title">{conversation?.title || "New chat"}</h1>
        <ModelSelector models={models} value={model} onChange={changeModel} />
        <KnowledgeSelector value={conversation?.knowledge_base_ids ?? draftBases} onChange={changeBases} />
        {conversation && (
          <button type="button" onClick={() => setSharing(true)}>
            Share
          </button>
        )}
      </div>
      <div
        className="messages"
        onScroll={(e) => {
          const el = e.currentTarget;
          following.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
      >
        {!conversationId && <p className="empty-state">Ask anything. Answers stream in as they are written.</p>}
        {visible.map((message) =>
          answer && message.id === answer.assistantMessageId ? (
            <StreamingBubble key={message.id} answer={answer} stored={message} onRetry={retry} />
          ) : (
            <MessageBubble
              key={message.id}
              message={message}
              actions={actions}
              locked={turn.busy}
              highlighted={message.id === focusId}
              conversationId={conversation?.id}
            />
          ),
        )}
        {question && (
          <article className="bubble user pending" aria-label="Your message">
            <header className="bubble-head">
              <span className="who">You</span>
            </header>
            <p className="plain">{question.content}</p>
            {question.images?.map((image, index) => <img key={index} className="attached" src={image.url} alt={`Image ${index + 1}`} />)}
          </article>
        )}
        {answer && !liveInPath && <StreamingBubble answer={answer} stored={null} onRetry={retry} />}
        <div ref={bottom} />
      </div>
      <InputArea busy={turn.busy} onSend={(content, images) => void send(content, images)} onStop={turn.stop} onRefused={notify} />
      {sharing && conversation && <ShareDialog conversationId={conversation.id} onClose={() => setSharing(false)} />}
    </section>
  );
}
