/*
 * noclash chat widget.
 *
 *   <script src="https://HOST/widget.js" data-token="PUBLIC_TOKEN" async></script>
 *
 * Renders a chat bubble and panel inside a Shadow DOM (no global names, no styles leak in
 * or out, no cookies, no request to anyone but HOST). What keeps a visitor's actions single:
 *
 * - a session is started with an Idempotency-Key made once per page view, so a double
 *   click or a retried request makes one session; its id is kept in localStorage, so a
 *   reload or a second tab continues the same conversation;
 * - each message is sent with a client_message_id made once per composed text, so a
 *   double submit or a resend after a network error stores it once (an edited text is a
 *   new message with a new id); the text leaves the box when it is sent (shown pending)
 *   and comes back only if the send failed, so what is typed meanwhile is kept;
 * - replies arrive on the session's event stream (Server-Sent Events); after every
 *   (re)connection the widget reads what it missed from the messages API, and a message
 *   is shown once whatever path brought it (by id). A refused stream is told apart by
 *   that read: a session that is gone (404) ends the chat; otherwise (too many tabs
 *   streaming, 429) the widget polls the messages API with a backoff and tries the
 *   stream again now and then.
 */
(() => {
  "use strict";

  const script =
    document.currentScript ||
    document.querySelector('script[data-token][src*="widget.js"]');
  if (!script || !script.dataset.token) return;
  const token = script.dataset.token;
  const base = new URL(script.src, location.href).origin;
  const api = `${base}/api/widget/${encodeURIComponent(token)}/sessions`;
  const storeKey = `noclash:${token}:session`;

  const uuid = () => {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
  // One key per page view: every attempt to start the session from this page is one.
  const startKey = uuid();

  const CSS = `
    :host { all: initial; }
    * { box-sizing: border-box; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
    .bubble { position: fixed; right: 20px; bottom: 20px; width: 56px; height: 56px;
      border-radius: 50%; border: 0; background: #2457d6; color: #fff; cursor: pointer;
      box-shadow: 0 4px 14px rgba(0,0,0,.25); z-index: 2147483646; font-size: 24px; }
    .bubble:focus-visible, button:focus-visible, textarea:focus-visible {
      outline: 3px solid #ffb020; outline-offset: 2px; }
    .panel { position: fixed; right: 20px; bottom: 88px; width: 340px; height: 460px;
      max-height: calc(100vh - 110px); background: #fff; color: #1b1b1f;
      border-radius: 12px; box-shadow: 0 8px 28px rgba(0,0,0,.28); display: flex;
      flex-direction: column; overflow: hidden; z-index: 2147483647; }
    .panel[hidden] { display: none; }
    header { background: #2457d6; color: #fff; padding: 12px 14px; display: flex;
      align-items: center; justify-content: space-between; }
    header h2 { margin: 0; font-weight: 600; font-size: 15px; color: inherit; }
    header button { background: none; border: 0; color: #fff; cursor: pointer; font-size: 18px; }
    .body { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column;
      gap: 8px; background: #f5f6f8; }
    .msg { max-width: 80%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap;
      word-wrap: break-word; }
    .msg.in { align-self: flex-end; background: #2457d6; color: #fff; }
    .msg.out { align-self: flex-start; background: #fff; border: 1px solid #dde1e8; }
    .msg.pending { opacity: .6; }
    .notice { text-align: center; color: #5b6170; font-size: 13px; padding: 6px; }
    .notice.error { color: #b3261e; }
    .center { margin: auto; text-align: center; display: flex; flex-direction: column; gap: 10px;
      align-items: center; }
    .primary { background: #2457d6; color: #fff; border: 0; border-radius: 8px;
      padding: 9px 16px; cursor: pointer; font-weight: 600; }
    .primary:disabled { opacity: .6; cursor: default; }
    .link { background: none; border: 0; color: #2457d6; cursor: pointer; text-decoration: underline; }
    form { display: flex; gap: 6px; padding: 10px; border-top: 1px solid #dde1e8; background: #fff; }
    form[hidden] { display: none; }
    textarea { flex: 1; resize: none; height: 40px; padding: 9px; border: 1px solid #c7ccd6;
      border-radius: 8px; }
  `;

  const host = document.createElement("div");
  host.setAttribute("data-noclash-widget", "");
  const root = host.attachShadow({ mode: "open" });
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(CSS);
  root.adoptedStyleSheets = [sheet];

  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  };

  const bubble = el("button", { class: "bubble", type: "button", "aria-label": "Open chat",
    "aria-expanded": "false" }, "💬");
  const heading = el("h2", {}, "Chat");
  const closeButton = el("button", { type: "button", "aria-label": "Close chat" }, "×");
  const body = el("div", { class: "body", role: "log", "aria-live": "polite" });
  // No maxLength: it cut a longer paste silently and the cut text was sent; the server
  // refuses what it does not take (a 422, said in the panel) and the text stays.
  const input = el("textarea", { "aria-label": "Your message", placeholder: "Write a message…" });
  const send = el("button", { class: "primary", type: "submit" }, "Send");
  const form = el("form", { hidden: true }, input, send);
  const panel = el("section", { class: "panel", hidden: true, role: "dialog",
    "aria-label": "Chat" }, el("header", {}, heading, closeButton), body, form);
  root.append(bubble, panel);

  const state = {
    chatbot: null,
    session: null, // {session_id, conversation_id}
    messages: new Map(), // id -> element
    lastId: null,
    stream: null,
    draft: null, // {id, text}: the client_message_id made for exactly this text
    outbox: [], // [{text, node}]: sent in order, the first one on its way
    closed: false,
    lastEventId: null, // resumes a stream this widget had to re-create
    banner: null, // the one "Reconnecting…" notice
    retryTimer: null, // the next stream attempt (after a refusal) or poll
    offSite: false, // the chatbot's allowed_origins took this site off: nothing more to try
  };

  const notice = (text, { error = false, action = null } = {}) => {
    const node = el("div", { class: `notice${error ? " error" : ""}` }, text);
    if (action) node.append(" ", el("button", { class: "link", type: "button", onclick: action.run },
      action.label));
    body.append(node);
    body.scrollTop = body.scrollHeight;
    return node;
  };

  const fetchJSON = async (url, options = {}) => {
    const response = await fetch(url, { ...options, credentials: "omit", mode: "cors" });
    let data = null;
    try { data = await response.json(); } catch { /* no body */ }
    return { status: response.status, ok: response.ok, data };
  };

  const show = (message) => {
    if (!state.lastId || message.id > state.lastId) state.lastId = message.id;
    if (state.messages.has(message.id)) {
      state.messages.get(message.id).classList.remove("pending");
      return;
    }
    const sending = message.direction === "in"
      && state.outbox.find((o) => !o.node.dataset.id && o.text === message.text);
    let node;
    if (sending) {
      // The stream brought a message being sent before its answer: its pending node.
      node = sending.node;
      node.classList.remove("pending");
    } else {
      node = el("div", { class: `msg ${message.direction}` });
      node.textContent = message.text;
      body.append(node);
    }
    node.dataset.id = message.id;
    state.messages.set(message.id, node);
    body.scrollTop = body.scrollHeight;
  };

  // The one "Reconnecting…" notice, whichever attempt made it.
  const banner = (text) => {
    if (state.banner) { state.banner.remove(); state.banner = null; }
    if (text) state.banner = notice(text);
  };

  const remember = (session) => {
    state.session = session;
    try { localStorage.setItem(storeKey, JSON.stringify(session)); } catch { /* private mode */ }
  };

  const forget = () => {
    state.session = null;
    try { localStorage.removeItem(storeKey); } catch { /* private mode */ }
  };

  const recall = () => {
    try { return JSON.parse(localStorage.getItem(storeKey) || "null"); } catch { return null; }
  };

  // -- the chatbot --------------------------------------------------------------------------
  const loadChatbot = async () => {
    body.replaceChildren();
    let answer;
    try {
      answer = await fetchJSON(`${base}/api/public/chatbots/${encodeURIComponent(token)}`);
    } catch {
      notice("Cannot reach the chat right now.", { error: true,
        action: { label: "Retry", run: loadChatbot } });
      return;
    }
    if (answer.status === 404) {
      notice("This chat is not available.", { error: true });
      return;
    }
    if (answer.status === 401) {
      notice("This chat is for signed-in customers. Please sign in on this site first.",
        { error: true });
      return;
    }
    if (answer.status === 403) {
      notice("This chat is not available on this site.", { error: true });
      return;
    }
    if (!answer.ok) {
      notice("The chat is having trouble right now.", { error: true,
        action: { label: "Retry", run: loadChatbot } });
      return;
    }
    state.chatbot = answer.data;
    heading.textContent = answer.data.name;
    if (answer.data.require_auth) {
      notice("This chat is for signed-in customers. Please sign in on this site first.",
        { error: true });
      return;
    }
    const saved = recall();
    if (saved && saved.session_id) {
      await openSession(saved);
    } else {
      offerStart();
    }
  };

  const offerStart = ({ keep = false } = {}) => {
    if (!keep) body.replaceChildren();
    form.hidden = true;
    const button = el("button", { class: "primary", type: "button" }, "Start a conversation");
    button.addEventListener("click", () => startSession(button));
    body.append(el("div", { class: "center" }, el("p", {}, "Hi! How can we help?"), button));
  };

  const startSession = async (button) => {
    // Another tab may have started one meanwhile: continue it rather than start a second.
    const saved = recall();
    if (saved && saved.session_id) { await openSession(saved); return; }
    button.disabled = true;
    let answer;
    try {
      answer = await fetchJSON(api, { method: "POST", headers: { "Idempotency-Key": startKey } });
    } catch {
      button.disabled = false;
      notice("Could not start the conversation (network error).", { error: true,
        action: { label: "Retry", run: () => startSession(button) } });
      return;
    }
    if (answer.status === 403) { offSite(); return; }
    if (!answer.ok) {
      button.disabled = false;
      const why = answer.status === 429 ? "Too many conversations started; wait a moment."
        : "Could not start the conversation.";
      notice(why, { error: true, action: { label: "Retry", run: () => startSession(button) } });
      return;
    }
    remember(answer.data);
    await openSession(answer.data);
  };

  // -- a session ----------------------------------------------------------------------------
  const sessionUrl = () => `${api}/${encodeURIComponent(state.session.session_id)}`;

  // The chatbot's owner took this site off its allowed_origins (an empty list: every
  // site) while the chat was open: every read, stream and send is a 403 from now on (or a
  // refused preflight, a network error to this page). Say so once and stop asking: it
  // said "Reconnecting…" forever, and offered a Retry that could never work. The session
  // is kept (the owner may allow this site again; a reload then continues it).
  class OffSite extends Error {}
  const offSite = () => {
    if (state.offSite) return;
    state.offSite = true;
    stopListening();
    state.session = null;
    giveBack(); // a message on its way was not sent: no faded bubble left pending
    form.hidden = true;
    notice("This chat is not available on this site.", { error: true });
  };
  // A send that met a network error may have met a refused preflight: the widget's
  // public read is a simple request, whose 403 this page can read.
  const checkSite = async () => {
    try {
      const answer = await fetchJSON(`${base}/api/public/chatbots/${encodeURIComponent(token)}`);
      if (answer.status === 403) offSite();
    } catch { /* unreachable: nothing to tell */ }
    return state.offSite;
  };

  const catchUp = async () => {
    // Everything after the last message shown, page by page. False: the session is gone.
    for (;;) {
      const after = state.lastId ? `&after=${encodeURIComponent(state.lastId)}` : "";
      const answer = await fetchJSON(`${sessionUrl()}/messages?limit=200${after}`);
      if (answer.status === 403) { offSite(); throw new OffSite(); }
      if (answer.status === 404) return false;
      if (!answer.ok) throw new Error(`messages: ${answer.status}`);
      for (const m of answer.data.items) show(m);
      if (!answer.data.next_cursor) return true;
    }
  };

  const stopListening = () => {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    if (state.stream) { state.stream.close(); state.stream = null; }
    banner(null);
  };

  // The session is gone (its chatbot deleted, or it expired): say so, forget it, and offer
  // a new one if the chat itself is still there.
  const ended = async () => {
    if (!state.session) return; // said already
    stopListening();
    forget();
    form.hidden = true;
    notice("This chat has ended.", { error: true });
    let answer = null;
    try {
      answer = await fetchJSON(`${base}/api/public/chatbots/${encodeURIComponent(token)}`);
    } catch { /* offer nothing we cannot check */ }
    if (state.session) return; // another tab's session was followed meanwhile
    if (answer && answer.ok && !answer.data.require_auth) offerStart({ keep: true });
    else if (answer && answer.status === 404) notice("This chat is not available.", { error: true });
  };

  const openSession = async (session) => {
    stopListening();
    state.session = session;
    state.messages.clear();
    state.lastId = null;
    body.replaceChildren();
    try {
      if (!(await catchUp())) { forget(); offerStart(); return; }
    } catch (error) {
      if (error instanceof OffSite) return;
      notice("Cannot load the conversation (network error).", { error: true,
        action: { label: "Retry", run: () => openSession(session) } });
      return;
    }
    form.hidden = false;
    listen();
    input.focus();
  };

  const STREAM_RETRY = 30000; // a refused stream is tried again this often (ms)

  const listen = () => {
    if (state.stream) state.stream.close();
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    const session = state.session;
    if (!session) return;
    const resume = state.lastEventId ? `?last_event_id=${encodeURIComponent(state.lastEventId)}` : "";
    const stream = new EventSource(`${sessionUrl()}/stream${resume}`);
    state.stream = stream;
    const current = () => state.stream === stream && state.session === session;
    stream.addEventListener("open", () => {
      banner(null);
      catchUp().then((alive) => { if (!alive && current()) ended(); }).catch(() => {});
    });
    stream.addEventListener("error", () => {
      if (!current()) return;
      if (stream.readyState !== EventSource.CLOSED) {
        // The browser reconnects by itself.
        if (!state.banner) banner("Reconnecting…");
        return;
      }
      // Refused (an answer that is not a stream): find out why with a catch-up read.
      stream.close();
      state.stream = null;
      refused(session, 2000);
    });
    stream.addEventListener("message.created", (event) => {
      state.lastEventId = event.lastEventId || state.lastEventId;
      const envelope = JSON.parse(event.data);
      const message = envelope.data.message;
      if (state.closed && message.direction === "in") state.closed = false;
      show(message);
    });
    stream.addEventListener("conversation.status_changed", (event) => {
      state.lastEventId = event.lastEventId || state.lastEventId;
      const envelope = JSON.parse(event.data);
      if (envelope.data.to === "CLOSED") {
        state.closed = true;
        notice("This conversation was closed. Write again to start a new one.");
      }
    });
  };

  // No stream: read the messages (404: the session is gone; a network error: the server
  // is unreachable, say so once and try again later; otherwise the stream was refused,
  // e.g. 429 for too many tabs, and the messages read keeps the chat going), then poll
  // with a backoff, and try the stream again every STREAM_RETRY.
  const refused = async (session, delay, since = Date.now()) => {
    if (state.session !== session || state.stream) return;
    const before = state.lastId;
    let alive;
    try {
      alive = await catchUp();
    } catch {
      alive = null;
    }
    if (state.session !== session || state.stream) return;
    if (alive === false) { ended(); return; }
    if (alive === null) {
      if (!state.banner) banner("Reconnecting…");
    } else {
      banner(null);
    }
    if (Date.now() - since >= STREAM_RETRY) { listen(); return; }
    const next = state.lastId !== before ? 2000 : Math.min(delay * 2, 10000);
    state.retryTimer = setTimeout(() => refused(session, next, since), delay);
  };

  // A message leaves the box when it is sent (shown pending): what is typed meanwhile
  // stays, and an Enter meanwhile queues the next one, sent once this one is answered.
  const submit = (event) => {
    event.preventDefault();
    if (!state.session) return;
    const text = input.value.trim() ? input.value : "";
    if (!text) return;
    const node = el("div", { class: "msg in pending" });
    node.textContent = text;
    body.append(node);
    body.scrollTop = body.scrollHeight;
    input.value = "";
    state.outbox.push({ text, node });
    if (state.outbox.length === 1) deliver();
  };

  const deliver = async () => {
    const session = state.session;
    while (state.outbox.length && state.session === session) {
      const { text, node } = state.outbox[0];
      // One id per composed text: a resend of the same text is one message, an edited
      // one is another.
      if (!state.draft || state.draft.text !== text) state.draft = { id: uuid(), text };
      const draft = state.draft;
      let answer;
      try {
        answer = await fetchJSON(`${sessionUrl()}/messages`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ text, client_message_id: draft.id }),
        });
      } catch {
        answer = null;
      }
      if (state.session !== session) break;
      if (answer && answer.status === 404) { giveBack(); ended(); return; }
      if ((answer && answer.status === 403) || (!answer && (await checkSite()))) {
        offSite();
        return;
      }
      if (answer && answer.status === 422) {
        // The text itself is refused (longer than the server takes): the same text would
        // be refused again, so no Retry; say why, and give it back to be shortened.
        state.draft = null;
        giveBack();
        const why = answer.data && answer.data.detail;
        notice(why ? `Your message was not sent: ${why}.` : "Your message was not sent.",
          { error: true });
        input.focus();
        return;
      }
      if (!answer || !answer.ok) {
        // A definite refusal stored nothing: a resend may use a new id.
        if (answer && answer.status !== 429) state.draft = null;
        giveBack();
        notice(!answer ? "Your message was not sent (network error)."
          : answer.status === 429 ? "You are sending too fast; wait a moment."
            : "Your message was not sent.", { error: true,
          action: { label: "Retry", run: () => form.requestSubmit() } });
        return;
      }
      state.outbox.shift();
      if (state.draft === draft) state.draft = null;
      if (answer.data.conversation_id !== state.session.conversation_id) {
        remember({ ...state.session, conversation_id: answer.data.conversation_id });
      }
      state.closed = false;
      const id = answer.data.message_id;
      if (!node.dataset.id) {
        if (state.messages.has(id)) node.remove(); // the stream showed it already
        else { node.dataset.id = id; state.messages.set(id, node); }
      }
      show({ id, direction: "in", text });
    }
    giveBack();
  };

  // What could not be sent goes back in the box, before what was typed meanwhile.
  const giveBack = () => {
    const texts = state.outbox.map((o) => o.text);
    for (const o of state.outbox) if (!o.node.dataset.id) o.node.remove();
    state.outbox = [];
    if (texts.length) input.value = [...texts, input.value].filter(Boolean).join("\n");
  };

  form.addEventListener("submit", submit);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  // Another tab of this page started the session: follow it, shown or not (once this tab
  // has loaded the chat; until then, opening the panel reads it from storage).
  const follow = (saved) => {
    if (!saved || !saved.session_id || state.session || !state.chatbot) return;
    if (state.chatbot.require_auth) return;
    openSession(saved);
  };
  addEventListener("storage", (event) => {
    if (event.key !== storeKey || !event.newValue) return;
    try { follow(JSON.parse(event.newValue)); } catch { /* not ours */ }
  });

  let loaded = false;
  const toggle = (open) => {
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    bubble.setAttribute("aria-label", open ? "Close chat" : "Open chat");
    if (open && !loaded) { loaded = true; loadChatbot(); }
    else if (open) follow(recall());
    if (open && !form.hidden) input.focus();
    if (!open) bubble.focus();
  };
  bubble.addEventListener("click", () => toggle(panel.hidden));
  closeButton.addEventListener("click", () => toggle(false));
  panel.addEventListener("keydown", (event) => { if (event.key === "Escape") toggle(false); });

  const mount = () => document.body.append(host);
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
