// What the browser keeps: the API key and the theme (localStorage), nothing else.
const KEY = "chatbot-llm.key";
const THEME = "chatbot-llm.theme";

export type Theme = "system" | "light" | "dark";

/** The key handed over in the link `make run` prints (`/#key=…`) is stored and removed from the address bar. */
export function takeKeyFromUrl(): void {
  const match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
  if (!match?.[1]) return;
  saveKey(decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

export function loadKey(): string | null {
  return localStorage.getItem(KEY);
}

export function saveKey(key: string): void {
  localStorage.setItem(KEY, key);
}

export function forgetKey(): void {
  localStorage.removeItem(KEY);
}

export function loadTheme(): Theme {
  const theme = localStorage.getItem(THEME);
  return theme === "light" || theme === "dark" ? theme : "system";
}

export function applyTheme(theme: Theme): void {
  localStorage.setItem(THEME, theme);
  const dark = theme === "dark" || (theme === "system" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}
