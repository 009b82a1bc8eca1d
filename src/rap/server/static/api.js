// The HTTP API, as the page uses it: auth header, JSON errors turned into
// sentences a person can act on, and Server-Sent Events read from a POST.

const KEY = "rap.apiKey";

/** An API or network failure, carrying what the page needs to explain it. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export const auth = new EventTarget();

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  auth.dispatchEvent(new Event("change"));
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function failure(response) {
  let code = "http_" + response.status;
  let message = "";
  try {
    const body = await response.json();
    const error = body && body.error;
    if (error) {
      code = error.code || code;
      message = error.message || "";
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : body.detail.map((d) => d.msg).join("; ");
    }
  } catch {
    // not JSON: keep the status alone
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const error = new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
  if (response.status === 401) auth.dispatchEvent(new Event("unauthorized"));
  return error;
}

/**
 * fetch() against the API; resolves to the Response when it is 2xx (or a 304
 * for an `etag` given), throws ApiError otherwise.
 */
export async function request(path, { method = "GET", json, form, signal, etag } = {}) {
  const init = { method, signal, headers: headers(), cache: "no-store" };
  if (etag) init.headers["If-None-Match"] = etag;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "");
  }
  if (!response.ok && !(etag && response.status === 304)) throw await failure(response);
  return response;
}

export async function getJSON(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

/** The sentence to show for a failed call; `what` names the thing being sent ("photo"). */
export function explain(error, what = "file") {
  if (!(error instanceof ApiError)) return `Something went wrong in the page: ${error.message || error}`;
  const message = error.message.replace(/[.\s]+$/, "");
  const said = message ? ` (${message})` : "";
  const wait = error.retryAfter != null ? ` Try again in ${error.retryAfter} s.` : " Try again in a moment.";
  switch (error.status) {
    case 0:
      return "Cannot reach the rap server. Check that `rap serve` is running, then try again.";
    case 401:
      return "Your API key was not accepted. Sign in again.";
    case 403:
      return `Not allowed${said}.`;
    case 404:
      return message ? `${message}.` : "Not found: it may have just been deleted.";
    case 409:
      return message ? `${message}.` : "That name is already taken; choose another.";
    case 413:
      return `This ${what} is too large for the server${said}. Choose a smaller one.`;
    case 415:
      return `This ${what} is not an image the server can read${said}. Use a JPEG, PNG, WebP or HEIC photo.`;
    case 422:
      if (error.code === "invalid_image") return explain(new ApiError(415, error.code, error.message), what);
      return message ? `${message}.` : `The server could not use this ${what}.`;
    case 429:
      return `Too many requests.${wait}`;
    case 503:
      return `The assistant is busy.${wait}`;
    default:
      if (error.status >= 500) return `The server failed${said}. Try again; if it keeps failing, tell its operator.`;
      return message ? `${message}.` : `The request failed (HTTP ${error.status}).`;
  }
}

/**
 * Reads a text/event-stream body; yields {event, data} with data parsed as JSON
 * where it is JSON. (EventSource cannot POST, so the stream is read by hand.)
 */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const parsed = parseEvent(block);
      if (parsed) yield parsed;
    }
  }
  const last = parseEvent(buffer);
  if (last) yield last;
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  try {
    return { event, data: JSON.parse(text) };
  } catch {
    return { event, data: text };
  }
}
