/**
 * The admin API (`/auth/admin/...`, role `admin`), over a signed-in
 * {@link PortcullisClient}: its session, refresh and errors.
 *
 *   import { PortcullisAdmin } from "@portcullis/client/admin";
 *   const admin = new PortcullisAdmin(client);
 *   const page = await admin.listUsers({ query: "example.com", limit: 50 });
 */
import type { PortcullisClient } from "./client.js";
import type { KeyRetirement, KeyRotation, Revoked, User, UserPage, UserPatch } from "./types.js";

const seg = encodeURIComponent;

export class PortcullisAdmin {
  readonly #client: PortcullisClient;

  constructor(client: PortcullisClient) {
    this.#client = client;
  }

  /** `GET /auth/admin/users`: `query` searches email and name; `limit` 20 by default, at most 100. */
  listUsers(params: { query?: string; limit?: number; offset?: number } = {}): Promise<UserPage> {
    return this.#client.request<UserPage>("GET", "/admin/users", {
      auth: true,
      query: { query: params.query, limit: params.limit, offset: params.offset },
    });
  }

  /** `GET /auth/admin/users/{id}`. */
  getUser(id: string): Promise<User> {
    return this.#client.request<User>("GET", `/admin/users/${seg(id)}`, { auth: true });
  }

  /** `PATCH /auth/admin/users/{id}` (`user_updated`). */
  updateUser(id: string, patch: UserPatch): Promise<User> {
    return this.#client.request<User>("PATCH", `/admin/users/${seg(id)}`, { auth: true, body: patch });
  }

  /** `DELETE /auth/admin/users/{id}` (`user_deleted`). */
  deleteUser(id: string): Promise<void> {
    return this.#client.request<void>("DELETE", `/admin/users/${seg(id)}`, { auth: true });
  }

  /** `POST /auth/admin/users/{id}/ban`: every session of the user ends. */
  banUser(id: string): Promise<User> {
    return this.#client.request<User>("POST", `/admin/users/${seg(id)}/ban`, { auth: true });
  }

  /** `POST /auth/admin/users/{id}/unban`. */
  unbanUser(id: string): Promise<User> {
    return this.#client.request<User>("POST", `/admin/users/${seg(id)}/unban`, { auth: true });
  }

  /** `POST /auth/admin/users/{id}/roles/{role}` (`role_added`). */
  addRole(id: string, role: string): Promise<User> {
    return this.#client.request<User>("POST", `/admin/users/${seg(id)}/roles/${seg(role)}`, { auth: true });
  }

  /** `DELETE /auth/admin/users/{id}/roles/{role}` (`role_removed`). */
  removeRole(id: string, role: string): Promise<User> {
    return this.#client.request<User>("DELETE", `/admin/users/${seg(id)}/roles/${seg(role)}`, { auth: true });
  }

  /** `POST /auth/admin/users/{id}/sessions/revoke`: ends every session of the user. */
  revokeUserSessions(id: string): Promise<Revoked> {
    return this.#client.request<Revoked>("POST", `/admin/users/${seg(id)}/sessions/revoke`, { auth: true });
  }

  /** `POST /auth/admin/keys/rotate` (409 `rotation_conflict` if another rotation won a race). */
  rotateKeys(): Promise<KeyRotation> {
    return this.#client.request<KeyRotation>("POST", "/admin/keys/rotate", { auth: true });
  }

  /** `POST /auth/admin/keys/{kid}/retire`: the key leaves the JWKS at once. */
  retireKey(kid: string): Promise<KeyRetirement> {
    return this.#client.request<KeyRetirement>("POST", `/admin/keys/${seg(kid)}/retire`, { auth: true });
  }
}

export type { KeyRetirement, KeyRotation, Revoked, User, UserPage, UserPatch } from "./types.js";
