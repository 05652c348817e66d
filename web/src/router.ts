// Five pages and the browser's history: no router library needed.
import { useCallback, useEffect, useState } from "react";

export type Route =
  | { page: "new" }
  | { page: "chat"; conversationId: string; messageId: string | null }
  | { page: "usage" }
  | { page: "knowledge" }
  | { page: "shared"; token: string };

export function parseRoute(pathname: string, search = ""): Route {
  const parts = pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "c" && parts[1]) return { page: "chat", conversationId: parts[1], messageId: new URLSearchParams(search).get("m") };
  if (parts[0] === "shared" && parts[1]) return { page: "shared", token: parts[1] };
  if (parts[0] === "usage") return { page: "usage" };
  if (parts[0] === "knowledge") return { page: "knowledge" };
  return { page: "new" };
}

export function pathOf(route: Route): string {
  switch (route.page) {
    case "chat":
      return `/c/${encodeURIComponent(route.conversationId)}${route.messageId ? `?m=${encodeURIComponent(route.messageId)}` : ""}`;
    case "shared":
      return `/shared/${encodeURIComponent(route.token)}`;
    case "usage":
      return "/usage";
    case "knowledge":
      return "/knowledge";
    default:
      return "/";
  }
}

export function useRoute(): [Route, (route: Route, replace?: boolean) => void] {
  const [route, setRoute] = useState(() => parseRoute(location.pathname, location.search));
  useEffect(() => {
    const onPop = () => setRoute(parseRoute(location.pathname, location.search));
    addEventListener("popstate", onPop);
    return () => removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((next: Route, replace = false) => {
    const path = pathOf(next);
    if (replace) history.replaceState(null, "", path);
    else if (path !== location.pathname + location.search) history.pushState(null, "", path);
    setRoute(next);
  }, []);
  return [route, navigate];
}
