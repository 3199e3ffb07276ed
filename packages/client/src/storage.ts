/**
 * Where the client keeps its session: a string under one key. In token
 * mode that string holds the tokens; in cookie mode only the user and the
 * expiry (the tokens are `HttpOnly` cookies no script can read).
 *
 * Which storage decides what tabs share: {@link memoryStorage} (the
 * default) is this page's alone, so each tab signs in on its own;
 * {@link webStorage} over `localStorage` is shared by the origin's tabs
 * (and persists); over `sessionStorage` it is per tab (a duplicated tab
 * starts with a copy). See the README on tabs.
 */

/** A pluggable storage for the client's session. Methods may be synchronous or return promises. */
export interface TokenStorage {
  get(): string | null | Promise<string | null>;
  set(value: string): void | Promise<void>;
  remove(): void | Promise<void>;
}

/** Keeps the session in this page's memory only (gone on reload; never written anywhere). */
export function memoryStorage(): TokenStorage {
  let value: string | null = null;
  return {
    get: () => value,
    set: (v) => {
      value = v;
    },
    remove: () => {
      value = null;
    },
  };
}

/** The part of the Web Storage API the adapter uses (`localStorage`, `sessionStorage`). */
export interface WebStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Keeps the session in `localStorage` or `sessionStorage` under `key`. */
export function webStorage(area: WebStorageLike, key = "portcullis.session"): TokenStorage {
  return {
    get: () => area.getItem(key),
    set: (v) => area.setItem(key, v),
    remove: () => area.removeItem(key),
  };
}
