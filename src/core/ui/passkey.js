// Portcullis hosted pages: the passkey ceremonies, which WebAuthn allows only
// from script. Served as is from AUTH_PREFIX/ui/passkey.js and allowed by the
// pages' CSP by its SHA-256 alone; no dependencies, nothing inline.
//
// A form with data-passkey (its options endpoint) gets its button shown here.
// On submit: POST the options endpoint (JSON), run the ceremony, and submit
// the form (CSRF token and all) with the credential as JSON in "credential"
// and the options' challenge_id; the page's handler verifies and answers.
"use strict";
(() => {
  const bytes = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const text = (b) =>
    btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const ids = (list) => (list || []).map((d) => ({ ...d, id: bytes(d.id) }));
  for (const form of document.querySelectorAll("form[data-passkey]")) {
    const hint = form.querySelector("[data-passkey-hint]");
    const error = form.querySelector("[data-passkey-error]");
    const button = form.querySelector("button");
    if (!window.PublicKeyCredential || !navigator.credentials) {
      hint.textContent = "This browser does not support passkeys.";
      continue;
    }
    hint.hidden = true;
    button.hidden = false;
    const fail = (message) => {
      error.textContent = message;
      error.hidden = false;
      button.disabled = false;
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      error.hidden = true;
      const create = form.dataset.ceremony === "create";
      const email = create ? null : document.getElementById("email");
      let options;
      try {
        const res = await fetch(form.dataset.passkey, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(email && email.value.trim() ? { email: email.value.trim() } : {}),
        });
        options = await res.json();
        if (!res.ok) return fail(options.detail || "The passkey request was refused.");
      } catch (e) {
        return fail("The server could not be reached; try again.");
      }
      let c;
      try {
        c = create
          ? await navigator.credentials.create({
              publicKey: {
                ...options,
                challenge: bytes(options.challenge),
                user: { ...options.user, id: bytes(options.user.id) },
                excludeCredentials: ids(options.excludeCredentials),
              },
            })
          : await navigator.credentials.get({
              publicKey: {
                challenge: bytes(options.challenge),
                timeout: options.timeout,
                rpId: options.rpId,
                userVerification: options.userVerification,
                allowCredentials: ids(options.allowCredentials),
              },
            });
      } catch (e) {
        return fail(e.name === "NotAllowedError" ? "The passkey request was cancelled or timed out." : String(e.message));
      }
      const r = c.response;
      const response = { clientDataJSON: text(r.clientDataJSON) };
      if (create) {
        response.attestationObject = text(r.attestationObject);
        response.transports = r.getTransports ? r.getTransports() : [];
      } else {
        response.authenticatorData = text(r.authenticatorData);
        response.signature = text(r.signature);
        if (r.userHandle) response.userHandle = text(r.userHandle);
      }
      form.elements.credential.value = JSON.stringify({ id: c.id, rawId: text(c.rawId), type: c.type, response });
      if (form.elements.challenge_id) form.elements.challenge_id.value = options.challenge_id;
      form.submit();
    });
  }
})();
