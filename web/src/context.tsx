// What every part of the signed-in UI shares: the API, the models, notices and the conversation list's refresh.
import { createContext, useContext } from "react";

import type { Api } from "./api/client";
import type { ModelInfo } from "./api/types";
import type { Route } from "./router";

export interface AppState {
  api: Api;
  models: ModelInfo[];
  navigate: (route: Route, replace?: boolean) => void;
  /** Show a short message in the status area (errors say what the gateway said). */
  notify: (message: string) => void;
  /** Reload the sidebar's conversations (after a change made elsewhere). */
  refreshConversations: () => void;
  listVersion: number;
}

export const AppContext = createContext<AppState | null>(null);

export function useApp(): AppState {
  const state = useContext(AppContext);
  if (!state) throw new Error("useApp outside <AppContext.Provider>");
  return state;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
