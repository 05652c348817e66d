import { lazy, Suspense, useCallback, useEffect, useMemo, useState } from "react";

import { Api, ApiError } from "./api/client";
import type { ModelInfo } from "./api/types";
import { ChatView } from "./components/ChatView";
import { KeyEntry } from "./components/KeyEntry";
import { KnowledgePage } from "./components/KnowledgePage";
import { SharedPage } from "./components/SharedPage";
import { Sidebar } from "./components/Sidebar";
import { AppContext, messageOf, type AppState } from "./context";
import { useRoute } from "./router";
import { applyTheme, forgetKey, loadKey, loadTheme, saveKey, type Theme } from "./settings";

const THEMES: Theme[] = ["system", "light", "dark"];
// The charts library is loaded only when the usage page is opened.
const UsagePage = lazy(() => import("./components/UsagePage").then((module) => ({ default: module.UsagePage })));

export function App() {
  const [route, navigate] = useRoute();
  const [key, setKey] = useState(loadKey);
  if (route.page === "shared") return <SharedPage token={route.token} />;
  if (!key)
    return (
      <KeyEntry
        onKey={(entered) => {
          saveKey(entered);
          setKey(entered);
        }}
      />
    );
  return (
    <SignedIn
      apiKey={key}
      route={route}
      navigate={navigate}
      onSignOut={() => {
        forgetKey();
        setKey(null);
      }}
    />
  );
}

function SignedIn({ apiKey, route, navigate, onSignOut }: { apiKey: string; route: ReturnType<typeof useRoute>[0]; navigate: AppState["navigate"]; onSignOut: () => void }) {
  const api = useMemo(() => new Api(apiKey), [apiKey]);
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [notice, setNotice] = useState<string | null>(null);
  const [listVersion, setListVersion] = useState(0);
  const [drawer, setDrawer] = useState(false);
  const [theme, setTheme] = useState(loadTheme);

  const notify = useCallback((message: string) => setNotice(message), []);
  const refreshConversations = useCallback(() => setListVersion((v) => v + 1), []);

  useEffect(() => {
    api.models().then((all) => setModels(all.filter((model) => model.mode !== "embedding")), (error) => {
      if (error instanceof ApiError && error.status === 401) onSignOut();
      else setNotice(messageOf(error));
    });
  }, [api, onSignOut]);
  useEffect(() => {
    if (!notice) return;
    const timer = setTimeout(() => setNotice(null), 6000);
    return () => clearTimeout(timer);
  }, [notice]);

  const state = useMemo<AppState>(
    () => ({ api, models, navigate, notify, refreshConversations, listVersion }),
    [api, models, navigate, notify, refreshConversations, listVersion],
  );
  const nextTheme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length]!;

  return (
    <AppContext.Provider value={state}>
      <div className={`layout${drawer ? " drawer-open" : ""}`}>
        <header className="topbar">
          <button type="button" className="icon menu-toggle" aria-label="Conversations" aria-expanded={drawer} onClick={() => setDrawer(!drawer)}>
            ☰
          </button>
          <span className="brand">Chatbot-LLM</span>
          <span className="spacer" />
          <button
            type="button"
            onClick={() => {
              applyTheme(nextTheme);
              setTheme(nextTheme);
            }}
            aria-label={`Theme: ${theme}. Switch to ${nextTheme}`}
          >
            {theme === "dark" ? "☾" : theme === "light" ? "☀" : "◐"}
          </button>
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        </header>
        <Sidebar route={route} onChosen={() => setDrawer(false)} />
        <div className="main" onClick={() => drawer && setDrawer(false)}>
          {route.page === "knowledge" ? (
            <main className="chat-main">
              <KnowledgePage />
            </main>
          ) : route.page === "usage" ? (
            <Suspense fallback={<p role="status">Loading…</p>}>
              <UsagePage />
            </Suspense>
          ) : (
            <main className="chat-main">
              <ChatView
                key={route.page === "chat" ? `${route.conversationId}/${route.messageId ?? ""}` : "new"}
                conversationId={route.page === "chat" ? route.conversationId : null}
                focusId={route.page === "chat" ? route.messageId : null}
              />
            </main>
          )}
        </div>
        <div className="notice" role="status" aria-live="polite">
          {notice}
        </div>
      </div>
    </AppContext.Provider>
  );
}
