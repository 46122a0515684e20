// Passkeys (WebAuthn) for the extauthz login pages. Loaded from this service only
// (Content-Security-Policy script-src 'self'); no inline script, no third party.
// The page holds <div id="passkey" data-mode data-options data-action data-return-to>.
"use strict";
(function () {
  const root = document.getElementById("passkey");
  if (!root) {
    return;
  }
  const mode = root.dataset.mode;
  const button = document.getElementById("passkey-button");
  const errorBox = document.getElementById("passkey-error");
  const nameInput = document.getElementById("passkey-name");

  function toBytes(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const raw = atob(padded);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      out[i] = raw.charCodeAt(i);
    }
    return out;
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (let i = 0; i < bytes.length; i++) {
      raw += String.fromCharCode(bytes[i]);
    }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function show(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function call(method, url, body) {
    const init = {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = {};
    try {
      data = await response.json();
    } catch (ignored) {
      data = {};
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function descriptors(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: toBytes(c.id) });
    });
  }

  function encode(cred) {
    const r = cred.response;
    const out = {
      id: cred.id,
      rawId: toText(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || null,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: { clientDataJSON: toText(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = toText(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = toText(r.authenticatorData);
      out.response.signature = toText(r.signature);
      out.response.userHandle = r.userHandle ? toText(r.userHandle) : null;
    }
    return out;
  }

  async function ceremony() {
    const got = mode === "second-step"
      ? await call("GET", root.dataset.options)
      : await call("POST", root.dataset.options, {});
    if (!got.ok) {
      if (got.data.location) {
        window.location.assign(got.data.location);
        return null;
      }
      throw new Error(got.data.error_description || "options refused");
    }
    const options = got.data;
    const returnTo = options.returnTo || root.dataset.returnTo || "/";
    delete options.returnTo;
    options.challenge = toBytes(options.challenge);
    if (mode === "register") {
      options.user.id = toBytes(options.user.id);
      options.excludeCredentials = descriptors(options.excludeCredentials);
      const created = await navigator.credentials.create({ publicKey: options });
      const name = nameInput ? nameInput.value : "";
      return [await call("POST", root.dataset.action, { credential: encode(created), name: name }),
        returnTo];
    }
    options.allowCredentials = descriptors(options.allowCredentials);
    const asserted = await navigator.credentials.get({ publicKey: options });
    const body = mode === "second-step"
      ? { kind: "webauthn", response: JSON.stringify(encode(asserted)) }
      : { credential: encode(asserted), return_to: root.dataset.returnTo };
    return [await call("POST", root.dataset.action, body), returnTo];
  }

  // recovery codes made with a first factor: shown once, in place of the button
  function showCodes(codes, next) {
    const heading = document.createElement("h2");
    heading.textContent = "Recovery codes";
    const intro = document.createElement("p");
    intro.textContent = "Keep these codes somewhere safe. Each works once, when you do not "
      + "have your passkey. They are not shown again.";
    const list = document.createElement("ul");
    list.id = "recovery-codes";
    codes.forEach(function (code) {
      const item = document.createElement("li");
      const text = document.createElement("code");
      text.textContent = code;
      item.appendChild(text);
      list.appendChild(item);
    });
    const link = document.createElement("a");
    link.id = "continue";
    link.href = next;
    link.textContent = "Continue";
    const paragraph = document.createElement("p");
    paragraph.appendChild(link);
    root.replaceChildren(heading, intro, list, paragraph);
  }

  async function run() {
    show("");
    button.disabled = true;
    try {
      const done = await ceremony();
      if (done === null) {
        return;
      }
      const result = done[0];
      if (result.ok && result.data.recovery_codes) {
        showCodes(result.data.recovery_codes, result.data.location || done[1]);
        return;
      }
      if (result.ok) {
        window.location.assign(result.data.location || done[1]);
        return;
      }
      show(result.data.error_description || "The passkey was not accepted.");
    } catch (error) {
      show("The passkey could not be used (" + (error.name || "error") + ").");
    } finally {
      button.disabled = false;
    }
  }

  button.addEventListener("click", run);
}());
