/**
 * The auth API's JSON shapes, as the gateway sends and takes them (member
 * names are the wire names). The strong-authentication shapes (MFA,
 * passkeys) follow SPEC.md "Strong authentication".
 */

/** `UserResponse`: the account as the auth API shows it. */
export interface User {
  id: string;
  email: string;
  name: string | null;
  email_verified: boolean;
  avatar_url: string | null;
  phone: string | null;
  banned: boolean;
  roles: string[];
  /** RFC 3339. */
  created_at: string;
  /** The session this answer belongs to (set on every sign-in and on `/auth/me`). */
  session_id: string | null;
  /** RFC 8176 authentication methods (`pwd`, `otp`, `mfa`, `hwk`, `swk`, `user`, `fed`), where the gateway sends them. */
  amr?: string[];
  /** Unix seconds of the sign-in, where the gateway sends it. */
  auth_time?: number;
}

/** An OAuth identity linked to the account (`/auth/me` `providers`). */
export interface LinkedProvider {
  provider: string;
  email: string | null;
  email_verified: boolean;
  /** RFC 3339. */
  linked_at: string;
}

/** `GET /auth/me`. */
export interface Me extends User {
  providers: LinkedProvider[];
  /** The language of the user's emails (a BCP 47 tag), or `null`. */
  locale: string | null;
}

/** `PATCH /auth/me`: any of these (`null` or `""` clears one). */
export interface ProfilePatch {
  name?: string | null;
  avatar_url?: string | null;
  /** A BCP 47 language tag such as `fr` or `pt-BR`: the language of the user's emails. */
  locale?: string | null;
}

/**
 * A sign-in's body (signup, login, refresh, magic link, email code, OAuth
 * exchange, MFA verify, passkey login). In cookie mode the tokens are left
 * out (they travel only in the `HttpOnly` cookies).
 */
export interface AuthResponse {
  access_token?: string;
  refresh_token?: string;
  token_type: "Bearer";
  /** Access-token lifetime in seconds. */
  expires_in: number;
  user: User;
}

/** A second factor the account accepts (`mfa_required` answers list them). */
export type MfaMethod = "totp" | "backup_code" | (string & {});

/**
 * The answer of a first sign-in step for an account with a second factor:
 * no tokens; finish with {@link MfaApi.verify}.
 */
export interface MfaRequired {
  mfa_required: true;
  mfa_token: string;
  methods: MfaMethod[];
}

/** A completed sign-in as the client hands it to the app (the tokens stay in the client). */
export interface SignedIn {
  mfa_required: false;
  user: User;
  /** Access-token lifetime in seconds. */
  expires_in: number;
}

/** What a sign-in step gives: signed in, or a second factor is needed. */
export type SignInResult = SignedIn | MfaRequired;

/** The `{ "message" }` answers (magic link, code and reset requests, verification request). */
export interface Message {
  message: string;
}

/** `POST /auth/password/reset` and `/auth/password/change`. */
export interface PasswordChanged {
  message: string;
  revoked_sessions: number;
}

/** `POST /auth/email/verify`. */
export interface EmailVerified {
  email: string;
  email_verified: true;
}

/** One of the caller's sessions (`GET /auth/sessions`). */
export interface SessionInfo {
  id: string;
  created_at: string;
  last_used_at: string | null;
  expires_at: string;
  ip_address: string | null;
  user_agent: string | null;
  /** Whether it is the session making the call. */
  current: boolean;
}

/** `POST /auth/sessions/revoke-others`, `POST /auth/admin/users/{id}/sessions/revoke`. */
export interface Revoked {
  revoked: number;
}

/** `POST /auth/oauth/{provider}/link`: where to send the browser. */
export interface OAuthLink {
  authorize_url: string;
}

// --- Strong authentication (SPEC.md) ----------------------------------------

/** `POST /auth/mfa/totp/enroll`: a base32 secret (SHA-1, 6 digits, 30 s) and its `otpauth://` URI. */
export interface TotpEnrollment {
  secret: string;
  otpauth_uri: string;
}

/** `POST /auth/mfa/totp/confirm`, `POST /auth/mfa/backup-codes`: one-time codes (the previous ones die). */
export interface BackupCodes {
  backup_codes: string[];
}

/** `POST /auth/mfa/verify`: the `mfa_token` of an {@link MfaRequired} and a TOTP code or a backup code. */
export type MfaVerifyRequest =
  | { mfa_token: string; code: string; backup_code?: never }
  | { mfa_token: string; backup_code: string; code?: never };

/** A registered passkey. */
export interface Passkey {
  id: string;
  name: string | null;
  created_at: string;
  last_used_at?: string | null;
}

/** WebAuthn `PublicKeyCredentialDescriptorJSON`. */
export interface CredentialDescriptorJSON {
  type: "public-key";
  id: string;
  transports?: string[];
}

/** WebAuthn `PublicKeyCredentialCreationOptionsJSON` (base64url strings for binary members). */
export interface CreationOptionsJSON {
  rp: { id?: string; name: string };
  user: { id: string; name: string; displayName: string };
  challenge: string;
  pubKeyCredParams: { type: "public-key"; alg: number }[];
  timeout?: number;
  excludeCredentials?: CredentialDescriptorJSON[];
  authenticatorSelection?: {
    authenticatorAttachment?: string;
    residentKey?: string;
    requireResidentKey?: boolean;
    userVerification?: string;
  };
  hints?: string[];
  attestation?: string;
  extensions?: Record<string, unknown>;
}

/** WebAuthn `PublicKeyCredentialRequestOptionsJSON`, with the gateway's `challenge_id`. */
export interface RequestOptionsJSON {
  challenge: string;
  timeout?: number;
  rpId?: string;
  allowCredentials?: CredentialDescriptorJSON[];
  userVerification?: string;
  hints?: string[];
  extensions?: Record<string, unknown>;
  /** Send it back with the assertion ({@link PasskeysApi.signIn}). */
  challenge_id: string;
}

/** WebAuthn `RegistrationResponseJSON` (what `PublicKeyCredential.toJSON()` gives after `create`). */
export interface RegistrationResponseJSON {
  id: string;
  rawId: string;
  type: "public-key";
  response: {
    clientDataJSON: string;
    attestationObject: string;
    authenticatorData?: string;
    transports?: string[];
    publicKeyAlgorithm?: number;
    publicKey?: string;
  };
  authenticatorAttachment?: string | null;
  clientExtensionResults: Record<string, unknown>;
}

/** WebAuthn `AuthenticationResponseJSON` (what `PublicKeyCredential.toJSON()` gives after `get`). */
export interface AuthenticationResponseJSON {
  id: string;
  rawId: string;
  type: "public-key";
  response: {
    clientDataJSON: string;
    authenticatorData: string;
    signature: string;
    userHandle?: string | null;
  };
  authenticatorAttachment?: string | null;
  clientExtensionResults: Record<string, unknown>;
}

// --- Admin -------------------------------------------------------------------

/** `GET /auth/admin/users`. */
export interface UserPage {
  users: User[];
  total: number;
  limit: number;
  offset: number;
}

/** `PATCH /auth/admin/users/{id}`: any of these (`null` clears). */
export interface UserPatch {
  name?: string | null;
  avatar_url?: string | null;
  phone?: string | null;
  locale?: string | null;
  email_verified?: boolean;
  email?: string;
}

/** `POST /auth/admin/keys/rotate`. */
export interface KeyRotation {
  old_kid: string | null;
  new_kid: string;
}

/** `POST /auth/admin/keys/{kid}/retire`. */
export interface KeyRetirement {
  kid: string;
  /** The key that replaced it if it was the active one, else `null`. */
  new_kid: string | null;
}
