// Component tests render inside the app's context with a fake API.
import { render } from "@testing-library/react";
import type { ReactElement } from "react";
import { vi } from "vitest";

import type { Api } from "./api/client";
import type { ModelInfo } from "./api/types";
import { AppContext, type AppState } from "./context";

/** Render `ui` as the app would, its API `api`; the state it saw (navigate, notify… are mocks). */
export function renderInApp(ui: ReactElement, api: Api, models: ModelInfo[] = []): AppState {
  const state: AppState = { api, models, navigate: vi.fn(), notify: vi.fn(), refreshConversations: vi.fn(), listVersion: 0 };
  render(<AppContext.Provider value={state}>{ui}</AppContext.Provider>);
  return state;
}
