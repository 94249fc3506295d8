// Security keys (WebAuthn): adding one on the account page, and using one at log-in instead of a code.
// The server's options come base64url-encoded (py_webauthn's options_to_json); the browser's answer
// goes back the same way. Nothing here runs where the browser has no WebAuthn.
(function () {
  "use strict";

  const fromB64 = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  };
  const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function post(url, data) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(data || {}),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(typeof answer.detail === "string" ? answer.detail : "the helpline refused it");
    return answer;
  }

  const descriptors = (list) => (list || []).map((item) => ({ ...item, id: fromB64(item.id) }));

  async function createCredential(options) {
    const publicKey = {
      ...options, challenge: fromB64(options.challenge),
      user: { ...options.user, id: fromB64(options.user.id) },
      excludeCredentials: descriptors(options.excludeCredentials),
    };
    const credential = await navigator.credentials.create({ publicKey });
    return {
      id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toB64(credential.response.clientDataJSON),
        attestationObject: toB64(credential.response.attestationObject),
        transports: credential.response.getTransports ? credential.response.getTransports() : [],
      },
    };
  }

  async function getAssertion(options) {
    const publicKey = { ...options, challenge: fromB64(options.challenge), allowCredentials: descriptors(options.allowCredentials) };
    const credential = await navigator.credentials.get({ publicKey });
    return {
      id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toB64(credential.response.clientDataJSON),
        authenticatorData: toB64(credential.response.authenticatorData),
        signature: toB64(credential.response.signature),
        userHandle: credential.response.userHandle ? toB64(credential.response.userHandle) : undefined,
      },
    };
  }

  function say(element, text) {
    element.textContent = text;
    element.hidden = !text;
  }

  const supported = () => window.PublicKeyCredential !== undefined && window.isSecureContext;

  function setUpEnrolment(form) {
    const status = form.querySelector("[data-key-status]");
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      say(status, "Touch your security key…");
      try {
        const { publicKey } = await post("/api/me/security-keys/options");
        const credential = await createCredential(publicKey);
        await post("/api/me/security-keys", { name: form.elements.name.value.trim(), credential });
        window.location.reload();
      } catch (error) {
        say(status, `The security key was not added: ${error.message}`);
      }
    });
  }

  function setUpLogIn(button) {
    const status = document.querySelector("[data-key-status]");
    button.hidden = false;
    button.addEventListener("click", async () => {
      say(status, "Touch your security key…");
      try {
        const { publicKey } = await post("/login/verify/key/options");
        const credential = await getAssertion(publicKey);
        const { redirect } = await post("/login/verify/key", { credential });
        window.location.assign(redirect);
      } catch (error) {
        say(status, `${error.message} You can type a code instead.`);
      }
    });
  }

  // For the log-in page's own use and its tests: the same steps, one at a time.
  window.helplineSecurityKeys = { post, getAssertion };

  document.addEventListener("DOMContentLoaded", () => {
    if (!supported()) return;
    const form = document.getElementById("add-security-key");
    if (form) setUpEnrolment(form);
    const button = document.getElementById("use-security-key");
    if (button) setUpLogIn(button);
  });
}());
