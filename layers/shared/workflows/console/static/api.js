// The JSON API, same origin, with the credential the person signed in with. The credential is
// kept in sessionStorage only: it lives as long as this browser tab and goes with sign-out.

const STORAGE_KEY = "workflows.console.credential";

// The page is served at <prefix>/console/, the API at <prefix>/: wherever it is mounted.
export const API_BASE = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

export function credential() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (stored && (stored.kind === "key" || stored.kind === "bearer") && typeof stored.value === "string") {
      return stored;
    }
  } catch {
    // unreadable: as if absent
  }
  return null;
}

export function signIn(kind, value) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ kind, value }));
}

export function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
}

function authHeaders() {
  const held = credential();
  if (!held) return {};
  return held.kind === "key" ? { "X-API-KEY": held.value } : { Authorization: `Bearer ${held.value}` };
}

export function apiUrl(path, query) {
  // "" is the prefix itself (the saved workflows), which answers without a trailing slash.
  const url = path ? new URL(path.replace(/^\/+/, ""), API_BASE) : new URL(API_BASE.href.replace(/\/$/, ""));
  for (const [name, value] of Object.entries(query || {})) {
    const values = Array.isArray(value) ? value : [value];
    for (const item of values) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, String(item));
    }
  }
  return url;
}

async function send(path, { method = "GET", query, body, signal } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  const init = { method, headers, signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(apiUrl(path, query), init);
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch {
      // not JSON: keep the status line
    }
    const failure = new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || `${response.status} ${response.statusText}`,
      error.details,
    );
    if (response.status === 401) {
      window.dispatchEvent(new CustomEvent("console:unauthenticated", { detail: failure }));
    }
    throw failure;
  }
  return response;
}

/** The JSON answer of a request (null for 204). Throws ApiError with the service's error code. */
export async function api(path, options) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** The bytes of a response, as a Blob (artifact downloads go through the API with the credential). */
export async function apiBlob(path, options) {
  const response = await send(path, options);
  return response.blob();
}

export function isAbort(error) {
  return error instanceof DOMException && error.name === "AbortError";
}

/** Resolves after `ms`, or rejects with AbortError when `signal` aborts first. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(new DOMException("aborted", "AbortError"));
      return;
    }
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          reject(new DOMException("aborted", "AbortError"));
        },
        { once: true },
      );
    }
  });
}
