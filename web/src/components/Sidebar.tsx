import { useEffect, useState, type FormEvent } from "react";

import type { ConversationSummary, SearchHit } from "../api/types";
import { messageOf, useApp } from "../context";
import type { Route } from "../router";
import { Highlighted } from "./Highlighted";

interface Props {
  route: Route;
  /** Close the drawer (phone width) after choosing something. */
  onChosen: () => void;
}

/** The pages beside the conversations, as the sidebar's buttons. */
const PAGES: { page: "usage" | "knowledge"; label: string }[] = [
  { page: "usage", label: "Usage" },
  { page: "knowledge", label: "Knowledge" },
];

export function Sidebar({ route, onChosen }: Props) {
  const { api, navigate, notify, listVersion, refreshConversations } = useApp();
  const [items, setItems] = useState<ConversationSummary[]>([]);
  const [archived, setArchived] = useState<ConversationSummary[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [tag, setTag] = useState<string | null>(null);
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [showArchived, setShowArchived] = useState(false);

  useEffect(() => {
    let current = true;
    api.conversations({ tag: tag ?? undefined, limit: 50 }).then(
      (page) => {
        if (!current) return;
        setItems(page.items);
        setCursor(page.next_cursor);
      },
      (e) => notify(messageOf(e)),
    );
    if (showArchived) api.conversations({ tag: tag ?? undefined, archived: true, limit: 50 }).then((page) => current && setArchived(page.items));
    return () => {
      current = false;
    };
  }, [api, notify, tag, listVersion, showArchived]);

  // Search as the user types, a quarter second after the last key.
  useEffect(() => {
    const q = query.trim();
    if (!q) return setHits(null);
    let current = true;
    const timer = setTimeout(() => {
      api.search(q).then(
        (found) => current && setHits(found),
        (e) => current && notify(messageOf(e)),
      );
    }, 250);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [api, notify, query, listVersion]);

  const more = async () => {
    if (!cursor) return;
    const page = await api.conversations({ tag: tag ?? undefined, limit: 50, cursor });
    setItems((known) => [...known, ...page.items]);
    setCursor(page.next_cursor);
  };

  const open = (conversationId: string, messageId: string | null = null) => {
    navigate({ page: "chat", conversationId, messageId });
    onChosen();
  };

  const jump = async (hit: SearchHit) => {
    try {
      if (!hit.on_active_branch && hit.branch_leaf_id) {
        await api.setActiveLeaf(hit.conversation_id, hit.branch_leaf_id);
        refreshConversations(); // the hits' branch marks changed
      }
      open(hit.conversation_id, hit.message_id);
    } catch (error) {
      notify(messageOf(error));
    }
  };

  const activeId = route.page === "chat" ? route.conversationId : null;
  const tags = [...new Set(items.flatMap((c) => c.tags))].sort();
  const pinned = items.filter((c) => c.pinned);
  const recent = items.filter((c) => !c.pinned);

  return (
    <nav className="sidebar" aria-label="Conversations">
      <div className="sidebar-actions">
        <button
          type="button"
          className="primary"
          onClick={() => {
            navigate({ page: "new" });
            onChosen();
          }}
        >
          New chat
        </button>
        {PAGES.map(({ page, label }) => (
          <button
            key={page}
            type="button"
            onClick={() => {
              navigate({ page });
              onChosen();
            }}
            aria-current={route.page === page ? "page" : undefined}
          >
            {label}
          </button>
        ))}
      </div>
      <div className="search">
        <label htmlFor="search" className="visually-hidden">
          Search conversations
        </label>
        <input id="search" type="search" placeholder="Search" value={query} onChange={(e) => setQuery(e.target.value)} />
      </div>
      {hits !== null ? (
        <section aria-label="Search results">
          <h2 className="section-title">{hits.length ? `${hits.length} found` : "Nothing found"}</h2>
          <ul className="hits">
            {hits.map((hit, index) => (
              <li key={`${hit.conversation_id}-${hit.message_id ?? "title"}-${index}`}>
                <button type="button" className="hit" onClick={() => void jump(hit)}>
                  <span className="hit-title">{hit.conversation_title}</span>
                  <span className="hit-snippet">
                    <Highlighted text={hit.snippet} ranges={hit.highlights} />
                  </span>
                  {!hit.on_active_branch && <span className="muted"> (on another branch)</span>}
                </button>
              </li>
            ))}
          </ul>
        </section>
      ) : (
        <>
          {tags.length > 0 || tag ? (
            <div className="tag-filter" role="group" aria-label="Filter by tag">
              {(tag ? [tag] : tags).map((name) => (
                <button key={name} type="button" className="chip" aria-pressed={tag === name} onClick={() => setTag(tag === name ? null : name)}>
                  #{name}
                </button>
              ))}
            </div>
          ) : null}
          {pinned.length > 0 && <ConversationList title="Pinned" items={pinned} activeId={activeId} onOpen={open} />}
          <ConversationList title="Recent" items={recent} activeId={activeId} onOpen={open} />
          {cursor && (
            <button type="button" className="link" onClick={() => void more()}>
              Load more
            </button>
          )}
          <button type="button" className="link" aria-expanded={showArchived} onClick={() => setShowArchived(!showArchived)}>
            {showArchived ? "Hide archived" : "Show archived"}
          </button>
          {showArchived && archived && <ConversationList title="Archived" items={archived} activeId={activeId} onOpen={open} />}
        </>
      )}
    </nav>
  );
}

function ConversationList({
  title,
  items,
  activeId,
  onOpen,
}: {
  title: string;
  items: ConversationSummary[];
  activeId: string | null;
  onOpen: (id: string) => void;
}) {
  return (
    <section aria-label={title}>
      <h2 className="section-title">{title}</h2>
      {items.length === 0 && <p className="muted small">None yet</p>}
      <ul className="conversations">
        {items.map((conversation) => (
          <ConversationItem key={conversation.id} conversation={conversation} active={conversation.id === activeId} onOpen={onOpen} />
        ))}
      </ul>
    </section>
  );
}

function ConversationItem({ conversation, active, onOpen }: { conversation: ConversationSummary; active: boolean; onOpen: (id: string) => void }) {
  const { api, navigate, notify, refreshConversations } = useApp();
  const [menu, setMenu] = useState(false);
  const [renaming, setRenaming] = useState(false);
  const [title, setTitle] = useState(conversation.title);
  const [newTag, setNewTag] = useState("");
  const title_ = conversation.title || "Untitled";

  const change = async (patch: Parameters<typeof api.changeConversation>[1]) => {
    try {
      await api.changeConversation(conversation.id, patch);
      refreshConversations();
    } catch (error) {
      notify(messageOf(error));
    }
  };
  const rename = (event: FormEvent) => {
    event.preventDefault();
    setRenaming(false);
    if (title.trim() && title !== conversation.title) void change({ title: title.trim() });
  };
  const addTag = (event: FormEvent) => {
    event.preventDefault();
    const tag = newTag.trim().replace(/^#/, "");
    setNewTag("");
    if (tag && !conversation.tags.includes(tag)) void change({ tags: [...conversation.tags, tag] });
  };
  const remove = async () => {
    if (!confirm(`Delete “${title_}”? This cannot be undone.`)) return;
    try {
      await api.deleteConversation(conversation.id);
      refreshConversations();
      if (active) navigate({ page: "new" });
    } catch (error) {
      notify(messageOf(error));
    }
  };

  return (
    <li className={`conversation${active ? " active" : ""}`}>
      {renaming ? (
        <form onSubmit={rename} className="rename">
          <label htmlFor={`rename-${conversation.id}`} className="visually-hidden">
            New title
          </label>
          <input id={`rename-${conversation.id}`} value={title} onChange={(e) => setTitle(e.target.value)} autoFocus onBlur={rename} maxLength={300} />
        </form>
      ) : (
        <div className="conversation-row">
          <button type="button" className="open" onClick={() => onOpen(conversation.id)} aria-current={active ? "page" : undefined}>
            {conversation.pinned && <span aria-label="pinned">📌 </span>}
            {title_}
          </button>
          <button type="button" className="icon" aria-label={`Actions for ${title_}`} aria-expanded={menu} onClick={() => setMenu(!menu)}>
            ⋯
          </button>
        </div>
      )}
      {conversation.tags.length > 0 && (
        <ul className="tags" aria-label="Tags">
          {conversation.tags.map((tag) => (
            <li key={tag} className="chip small">
              #{tag}
              {menu && (
                <button type="button" className="icon" aria-label={`Remove tag ${tag}`} onClick={() => void change({ tags: conversation.tags.filter((t) => t !== tag) })}>
                  ×
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {menu && (
        <div className="menu" role="group" aria-label={`Actions for ${title_}`}>
          <button
            type="button"
            onClick={() => {
              setTitle(conversation.title);
              setRenaming(true);
              setMenu(false);
            }}
          >
            Rename
          </button>
          <button type="button" onClick={() => void change({ pinned: !conversation.pinned })}>
            {conversation.pinned ? "Unpin" : "Pin"}
          </button>
          <button type="button" onClick={() => void change({ archived: !conversation.archived })}>
            {conversation.archived ? "Unarchive" : "Archive"}
          </button>
          <button type="button" className="danger" onClick={() => void remove()}>
            Delete
          </button>
          <form onSubmit={addTag} className="add-tag">
            <label htmlFor={`tag-${conversation.id}`} className="visually-hidden">
              Add a tag
            </label>
            <input id={`tag-${conversation.id}`} placeholder="Add a tag" value={newTag} onChange={(e) => setNewTag(e.target.value)} maxLength={64} />
          </form>
        </div>
      )}
    </li>
  );
}
