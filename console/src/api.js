// The REST API as the console uses it: the same /v1 routes as any client,
// with the session's token in an Authorization header. The token lives in
// sessionStorage (gone when the tab closes) and never goes into a URL.

const SESSION_KEY = 'skiff.console.session';

/** The signed-in session, `{token, role: 'tenant' | 'admin'}`, or null. */
export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    return session && typeof session.token === 'string' ? session : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

/** A problem+json answer (RFC 9457): `field` names the input at fault. */
export class ApiProblem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.title = body?.title ?? `HTTP ${status}`;
    this.detail = body?.detail ?? '';
    this.field = body?.field ?? null;
  }
}

/** Called when the API refuses the session's token (401). */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new ApiProblem(response.status, body);
}

/** A fresh Idempotency-Key (128 random bits, hex; works outside secure contexts too). */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const RETRY_DELAYS_MS = [250, 1000];

/**
 * One request; resolves to the Response when it is 2xx, else throws an
 * ApiProblem. `token` overrides the session's (signing in).
 *
 * A request the network dropped (fetch's TypeError: a reset connection, the
 * browser's "network changed") is sent again, twice at most. A POST carries
 * an Idempotency-Key, the same on every try, so a retried create or stop
 * happens once (the API answers a repeat with the first answer).
 */
export async function request(path, { method = 'GET', body, accept = 'application/json', signal, token } = {}) {
  const bearer = token ?? loadSession()?.token;
  const headers = { Accept: accept };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method === 'POST') headers['Idempotency-Key'] = idempotencyKey();
  let response;
  for (let attempt = 0; ; attempt += 1) {
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
        credentials: 'omit',
      });
      break;
    } catch (error) {
      if (error.name === 'AbortError' || attempt >= RETRY_DELAYS_MS.length) throw error;
      await new Promise((done) => setTimeout(done, RETRY_DELAYS_MS[attempt]));
      if (signal?.aborted) throw error;
    }
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && token === undefined) onUnauthorized();
    throw problem;
  }
  return response;
}

/** GET (or any method) returning the JSON body, null for 204. */
export async function getJson(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

/** A query string from an object, skipping empty values; arrays repeat. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== '') search.append(key, String(v));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/**
 * Follows a container's log (`GET /v1/containers/{id}/logs?follow=true`):
 * calls `onText` with each decoded chunk until the stream ends (the
 * container exited, or it has no host yet) or `signal` aborts.
 */
export async function followLogs(id, onText, signal) {
  const response = await request(`/v1/containers/${encodeURIComponent(id)}/logs?follow=true`, {
    accept: 'text/plain',
    signal,
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  const rest = decoder.decode();
  if (rest) onText(rest);
}

/** Which kind of token this is: 'tenant', 'admin', or an ApiProblem thrown. */
export async function roleOf(token) {
  try {
    await request('/v1/containers?limit=1', { token });
    return 'tenant';
  } catch (problem) {
    if (!(problem instanceof ApiProblem) || problem.status !== 401) throw problem;
  }
  // Not a tenant's token: the admin's opens the hosts route.
  await request('/v1/hosts', { token });
  return 'admin';
}
