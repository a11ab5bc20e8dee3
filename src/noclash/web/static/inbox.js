/*
 * The noclash operator inbox: one page over the HTTP API, no build step.
 *
 * The API token lives in sessionStorage (this tab only, never in a URL). A reply is sent
 * with one Idempotency-Key per composed text, kept until the server has answered (any
 * answer: the server stores a refusal under the key too), so a double click or a resend
 * after a network error stores and delivers one reply, and an edited text is a new reply.
 * What is typed while a reply is on its way stays in the box. Live
 * updates come from the agent stream (GET /api/stream, Server-Sent Events read with fetch,
 * because EventSource cannot send the Authorization header); after a reconnection the
 * stream resumes from the last event id, and the thread is re-read from the API.
 */
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const TOKEN = "noclash:token";
  const STATUSES = ["OPEN", "SNOOZED", "CLOSED"];
  const uuid = () => crypto.randomUUID ? crypto.randomUUID()
    : ([1e7] + -1e3 + -4e3 + -8e3 + -1e11).replace(/[018]/g, (c) =>
      (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));

  const state = {
    token: sessionStorage.getItem(TOKEN),
    chatbots: [],
    chatbot: null,
    status: "OPEN",
    conversation: null,
    messages: [],
    replyKey: null, // {key, text, conversation}: the Idempotency-Key made for exactly this
    drafts: new Map(), // conversation id -> the reply typed there, kept while another is open
    sending: false,
    stream: null,
    lastEventId: null,
    refreshTimer: null,
    pollTimer: null,
    pollDelay: 1000, // deliveries on their way are re-read with a backoff
    focusDelivery: null, // a message whose Retry had the focus: keep it on its delivery
  };

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  // The fields a problem names: a 422 lists objects ({field, ...}), a 409 plain names.
  const fieldsOf = (error) => error instanceof ApiError && Array.isArray(error.problem.fields)
    ? error.problem.fields.map((f) => (f && typeof f === "object" ? f.field : f)) : [];

  const api = async (path, { method = "GET", body, headers = {} } = {}) => {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${state.token}`,
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    let data = null;
    try { data = await response.json(); } catch { /* no body */ }
    if (response.status === 401) { signOut("Your token is not valid any more."); }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, url: response.url };
  };

  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  };

  const when = (iso) => iso ? new Date(iso).toLocaleString() : "";

  // -- signing in ---------------------------------------------------------------------------
  const signOut = (reason) => {
    sessionStorage.removeItem(TOKEN);
    state.token = null;
    if (state.stream) state.stream.abort();
    $("app-view").hidden = true;
    $("signout").hidden = true;
    $("chatbot").disabled = true;
    $("signin-view").hidden = false;
    const error = $("signin-error");
    error.hidden = !reason;
    error.textContent = reason || "";
    $("token").focus();
  };

  $("signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    try {
      await api("/api/chatbots?limit=1");
    } catch (error) {
      signOut(error.status === 401 ? "That token is not valid." : `Cannot sign in: ${error.message}`);
      return;
    }
    sessionStorage.setItem(TOKEN, state.token);
    $("token").value = "";
    start();
  });
  $("signout").addEventListener("click", () => signOut(""));

  // -- chatbots, counts, the list ----------------------------------------------------------
  const loadChatbots = async () => {
    const items = [];
    let cursor = null;
    do {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const { data } = await api(`/api/chatbots?limit=200${q}`);
      items.push(...data.items);
      cursor = data.next_cursor;
    } while (cursor);
    state.chatbots = items;
    const select = $("chatbot");
    select.replaceChildren(...items.map((b) => el("option", { value: b.id }, b.name)));
    select.disabled = items.length === 0;
  };

  const loadCounts = async () => {
    if (!state.chatbot) return;
    const { data } = await api(`/api/chatbots/${state.chatbot}/conversations/counts`);
    for (const status of STATUSES) {
      document.querySelector(`[data-count="${status}"]`).textContent = String(data[status] || 0);
    }
  };

  const loadList = async () => {
    if (!state.chatbot) return;
    const chatbot = state.chatbot;
    const status = state.status;
    // The API pages oldest first: read every page, or the newest would never be listed.
    const all = [];
    let cursor = null;
    do {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const { data } = await api(
        `/api/conversations?chatbot_id=${chatbot}&status=${status}&limit=200${q}`);
      all.push(...data.items);
      cursor = data.next_cursor;
    } while (cursor);
    if (state.chatbot !== chatbot || state.status !== status) return; // switched meanwhile
    const items = all.sort((a, b) =>
      (b.last_message_at || b.created_at).localeCompare(a.last_message_at || a.created_at));
    // Items are kept by id and changed only where they changed: the list is a live region,
    // and rebuilding it on every event (each message re-reads it) had a screen reader read
    // every conversation again, and took the keyboard focus off a link in it.
    const list = $("list");
    const nodes = new Map([...list.children].map((li) => [li.dataset.id, li]));
    let previous = null;
    for (const c of items) {
      const href = `/inbox/${c.chatbot_id}/${encodeURIComponent(c.slug)}`;
      const title = c.title || c.psid || c.slug;
      const stamp = when(c.last_message_at || c.created_at);
      let li = nodes.get(c.id);
      nodes.delete(c.id);
      if (!li) {
        li = el("li", { "data-id": c.id }, el("a", { href, "data-id": c.id },
          el("span", { class: "title" }, title), el("span", { class: "when" }, stamp)));
      } else {
        const link = li.querySelector("a");
        if (link.getAttribute("href") !== href) link.setAttribute("href", href);
        const [titleNode, whenNode] = link.children;
        if (titleNode.textContent !== title) titleNode.textContent = title;
        if (whenNode.textContent !== stamp) whenNode.textContent = stamp;
      }
      const link = li.querySelector("a");
      if (state.conversation && state.conversation.id === c.id) {
        link.setAttribute("aria-current", "page");
      } else {
        link.removeAttribute("aria-current");
      }
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== li) list.insertBefore(li, expected);
      previous = li;
    }
    for (const li of nodes.values()) li.remove();
    $("list-empty").hidden = items.length > 0;
  };

  const refreshSoon = () => {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => {
      loadCounts().catch(() => {});
      loadList().catch(() => {});
    }, 200);
  };

  $("chatbot").addEventListener("change", (event) => {
    state.chatbot = event.target.value;
    leaveConversation();
    state.conversation = null;
    history.pushState({}, "", "/inbox");
    route();
    listen();
  });

  for (const tab of document.querySelectorAll("[data-status]")) {
    tab.addEventListener("click", () => {
      state.status = tab.dataset.status;
      for (const other of document.querySelectorAll("[data-status]")) {
        other.setAttribute("aria-selected", String(other === tab));
      }
      loadList().catch(showError);
    });
  }

  $("list").addEventListener("click", (event) => {
    const link = event.target.closest("a");
    if (!link || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    history.pushState({}, "", link.getAttribute("href"));
    route();
  });
  addEventListener("popstate", () => route());

  // -- a conversation ------------------------------------------------------------------------
  const alertBox = (content) => {
    const box = $("thread-alert");
    box.replaceChildren(...(content ? [content].flat() : []));
    box.hidden = !content;
  };
  const showError = (error) => alertBox(`Something went wrong: ${error.message}`);

  const openBySlug = async (chatbotId, slug) => {
    const { data, url } = await api(
      `/api/chatbots/${chatbotId}/conversations/by-slug/${encodeURIComponent(slug)}`);
    // A former slug answered 308 and fetch followed it: show the current address.
    const current = `/inbox/${data.chatbot_id}/${encodeURIComponent(data.slug)}`;
    if (location.pathname !== current || !url.endsWith(encodeURIComponent(data.slug))) {
      history.replaceState({}, "", current);
    }
    await showConversation(data);
  };

  // A draft belongs to its conversation: opening another one put the text in front of
  // another customer (Ctrl+Enter sent it there), and coming back it was gone.
  const leaveConversation = () => {
    const c = state.conversation;
    if (!c) return;
    if ($("reply").value) state.drafts.set(c.id, $("reply").value);
    else state.drafts.delete(c.id);
    $("reply").value = "";
    textAccepted();
  };
  const enterConversation = (id) => {
    $("reply").value = state.drafts.get(id) || "";
    state.drafts.delete(id);
  };

  const showConversation = async (conversation) => {
    if (!state.conversation || state.conversation.id !== conversation.id) {
      leaveConversation();
      enterConversation(conversation.id);
      $("messages").replaceChildren();
      resetPoll();
    }
    state.conversation = conversation;
    alertBox(null);
    $("thread-empty").hidden = true;
    $("thread-view").hidden = false;
    renderHead();
    await loadMessages();
    for (const link of document.querySelectorAll("#list a")) {
      if (link.dataset.id === conversation.id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  };

  const renderHead = () => {
    const c = state.conversation;
    $("thread-title").textContent = c.title || c.psid || c.slug;
    $("thread-status").textContent = c.status;
    $("thread-customer").textContent = c.psid ? `· customer ${c.psid}` : "";
    $("close").hidden = c.status === "CLOSED";
    $("snooze").hidden = c.status === "CLOSED";
    $("snooze-until").hidden = c.status === "CLOSED";
    $("reopen").hidden = c.status === "OPEN";
    $("composer").hidden = c.status === "CLOSED";
  };

  const loadMessages = async () => {
    const c = state.conversation;
    if (!c) return;
    const items = [];
    let cursor = null;
    do {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const { data } = await api(`/api/conversations/${c.id}/messages?limit=200${q}`);
      items.push(...data.items);
      cursor = data.next_cursor;
    } while (cursor);
    if (!state.conversation || state.conversation.id !== c.id) return;
    state.messages = items;
    renderMessages();
  };

  const deliveryLine = (message) => {
    const d = message.delivery;
    if (!d) return null;
    const labels = { queued: "Queued", sending: "Sending…", sent: "Sent",
      failed: "Failed", unknown: "May not have arrived" };
    // Focusable from script: the focus lands here when the Retry it had is gone.
    const line = el("span", { class: `delivery ${d.status}`, "data-status": d.status,
      tabIndex: -1 }, labels[d.status] || d.status);
    if (d.last_error && (d.status === "failed" || d.status === "unknown")) {
      line.append(`: ${d.last_error}`);
    }
    if (d.status === "failed" || d.status === "unknown") {
      line.append(el("button", { type: "button", class: "retry",
        onclick: (event) => retry(message, event.currentTarget) }, "Retry"));
    }
    return line;
  };

  const deliveryKey = (m) => m.delivery
    ? `${m.delivery.status}\u0000${m.delivery.last_error || ""}` : "";

  // Message nodes are kept by id and changed only where the message changed, so a re-read
  // neither re-announces the thread (aria-live) nor loses a selection or the focus.
  const renderMessages = () => {
    const list = $("messages");
    const nodes = new Map([...list.children].map((li) => [li.dataset.id, li]));
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    let added = false;
    let previous = null;
    for (const m of state.messages) {
      let li = nodes.get(m.id);
      nodes.delete(m.id);
      if (!li) {
        li = el("li", { class: `message ${m.direction}`, "data-id": m.id },
          el("span", { class: "text" }, m.text));
        added = true;
      } else {
        const text = li.querySelector(".text");
        if (text.textContent !== m.text) text.textContent = m.text;
      }
      const key = deliveryKey(m);
      if (li.dataset.delivery !== key) {
        const old = li.querySelector(".delivery");
        const hadFocus = (old && old.contains(document.activeElement))
          || state.focusDelivery === m.id;
        const line = deliveryLine(m);
        if (old && line) old.replaceWith(line);
        else if (old) old.remove();
        else if (line) li.append(line);
        li.dataset.delivery = key;
        if (hadFocus && line) {
          (line.querySelector("button") || line).focus();
          state.focusDelivery = null;
        }
      }
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== li) list.insertBefore(li, expected);
      previous = li;
    }
    for (const li of nodes.values()) li.remove();
    if (added && atEnd) list.scrollTop = list.scrollHeight;
    schedulePoll();
  };

  // Deliveries still on their way: look again, less and less often (the stream announces
  // every change; this is only in case an event was missed).
  const resetPoll = () => {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    state.pollDelay = 1000;
  };
  const schedulePoll = () => {
    const waiting = state.messages.some((m) => m.delivery &&
      ["queued", "sending"].includes(m.delivery.status));
    if (!waiting) { resetPoll(); return; }
    if (state.pollTimer) return;
    state.pollTimer = setTimeout(() => {
      state.pollTimer = null;
      loadMessages().catch(() => {});
    }, state.pollDelay);
    state.pollDelay = Math.min(state.pollDelay * 2, 30000);
  };

  const retry = async (message, button) => {
    if (button.contains(document.activeElement) || document.activeElement === button) {
      state.focusDelivery = message.id;
    }
    button.disabled = true;
    try {
      await api(`/api/messages/${message.id}/retry`, { method: "POST" });
    } catch (error) {
      // A 409 naming the connection (deleted) or its access_token (none) is a reply that
      // could only fail again: say why, or Retry looks like it did nothing. A 409 naming
      // the status (already on its way, or sent) needs no words: the re-read shows it.
      const named = fieldsOf(error);
      if (error.status !== 409) showError(error);
      else if (named.includes("connection_id") || named.includes("access_token")) {
        alertBox(`Not sent again: ${error.message}.`);
      }
    }
    resetPoll();
    try {
      await loadMessages();
    } finally {
      if (button.isConnected) {
        button.disabled = false;
        if (state.focusDelivery === message.id) button.focus();
      }
      state.focusDelivery = null;
    }
  };

  const transition = async (action, body) => {
    const c = state.conversation;
    alertBox(null);
    try {
      const { data } = await api(`/api/conversations/${c.id}/${action}`,
        { method: "POST", body });
      state.conversation = data;
      renderHead();
      refreshSoon();
    } catch (error) {
      if (error.status === 409 && error.problem.conversation_id) {
        const other = await api(`/api/conversations/${error.problem.conversation_id}`)
          .then((r) => r.data).catch(() => null);
        const href = other ? `/inbox/${other.chatbot_id}/${encodeURIComponent(other.slug)}` : null;
        alertBox(["Another conversation with this customer is open. ",
          href ? el("a", { href, id: "conflict-link", onclick: (e) => {
            e.preventDefault(); history.pushState({}, "", href); route();
          } }, "Open it") : ""]);
      } else {
        showError(error);
      }
    }
  };

  $("close").addEventListener("click", () => transition("close"));
  $("reopen").addEventListener("click", () => transition("reopen"));
  $("snooze").addEventListener("click", () => {
    const value = $("snooze-until").value;
    transition("snooze", value ? { until: new Date(value).toISOString() } : {});
  });

  // -- replying -------------------------------------------------------------------------------
  const reply = $("reply");
  const textAccepted = () => {
    reply.removeAttribute("aria-invalid");
    reply.removeAttribute("aria-describedby");
  };
  reply.addEventListener("input", textAccepted);
  reply.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = reply.value;
    const c = state.conversation;
    if (!text.trim() || !c) return;
    if (state.sending) return;
    // One key per composed text: every send of it, however often clicked, is one reply;
    // an edited text is another reply, with another key.
    if (!state.replyKey || state.replyKey.text !== text || state.replyKey.conversation !== c.id) {
      state.replyKey = { key: uuid(), text, conversation: c.id };
    }
    const key = state.replyKey.key;
    state.sending = true;
    $("send").disabled = true;
    try {
      await api(`/api/conversations/${c.id}/messages`,
        { method: "POST", body: { text }, headers: { "Idempotency-Key": key } });
      if (state.replyKey && state.replyKey.key === key) state.replyKey = null;
      // Remove what was sent; what was typed meanwhile stays (in this conversation's box,
      // or in its kept draft when the agent opened another one meanwhile).
      const here = state.conversation && state.conversation.id === c.id;
      const left = here ? reply.value : (state.drafts.get(c.id) || "");
      const rest = left === text ? ""
        : left.startsWith(text) ? left.slice(text.length).trimStart() : left;
      if (here) {
        reply.value = rest;
        alertBox(null);
        textAccepted();
      } else if (rest) state.drafts.set(c.id, rest);
      else state.drafts.delete(c.id);
    } catch (error) {
      // Any answer from the server is stored under the key (a refusal too): the key is
      // kept only when there was no answer (a network error), for the resend.
      if (error instanceof ApiError && state.replyKey && state.replyKey.key === key) {
        state.replyKey = null;
      }
      if (error instanceof ApiError && error.status === 409) {
        // Closed meanwhile (elsewhere): show it as it is now, with its Reopen.
        const fresh = await api(`/api/conversations/${c.id}`).then((r) => r.data)
          .catch(() => null);
        if (fresh && state.conversation && state.conversation.id === c.id) {
          state.conversation = fresh;
          renderHead();
          refreshSoon();
        }
        alertBox(fresh && fresh.status === "CLOSED"
          ? "The reply was not sent: this conversation is closed. Reopen it to reply."
          : `The reply was not sent (${error.message}).`);
      } else if (error instanceof ApiError) {
        alertBox(`The reply was not sent (${error.message}).`);
      } else {
        alertBox(`The reply was not sent (${error.message}). Send again: it will be sent once.`);
      }
      // The text is still in the box: the focus goes back there to fix it or send it again
      // (a click on Send left it nowhere: the button was disabled under it). A refusal of
      // the text itself (too long for the platform: a 422 naming text) marks the box
      // invalid, described by the alert, until it is edited.
      if (state.conversation && state.conversation.id === c.id) {
        if (fieldsOf(error).includes("text")) {
          reply.setAttribute("aria-invalid", "true");
          reply.setAttribute("aria-describedby", "thread-alert");
        }
        if (!$("composer").hidden) reply.focus();
      }
    } finally {
      state.sending = false;
      $("send").disabled = false;
    }
    resetPoll();
    await loadMessages();
    refreshSoon();
  });

  // -- live updates ---------------------------------------------------------------------------
  const listen = () => {
    if (state.stream) state.stream.abort();
    if (!state.chatbot || !state.token) return;
    const controller = new AbortController();
    state.stream = controller;
    const run = async () => {
      let delay = 500;
      while (!controller.signal.aborted) {
        try {
          const headers = { Authorization: `Bearer ${state.token}` };
          if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
          const response = await fetch(`/api/stream?chatbot_id=${state.chatbot}`,
            { headers, signal: controller.signal });
          if (!response.ok || !response.body) throw new Error(`stream ${response.status}`);
          delay = 500;
          // Whatever happened while disconnected: read it again.
          refreshSoon();
          loadMessages().catch(() => {});
          await readEvents(response.body, controller.signal);
        } catch (error) {
          if (controller.signal.aborted) return;
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 10000);
      }
    };
    run();
  };

  // The text/event-stream format, read from a fetch body: fields up to a blank line.
  const readEvents = async (stream, signal) => {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (event.data.length) dispatch(event);
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "event") event.type = text;
        else if (field === "id") event.id = text;
      }
    }
  };

  const dispatch = (event) => {
    if (event.id) state.lastEventId = event.id;
    let envelope;
    try { envelope = JSON.parse(event.data.join("\n")); } catch { return; }
    refreshSoon();
    const c = state.conversation;
    if (!c || envelope.conversation_id !== c.id) return;
    if (envelope.type === "conversation.status_changed") {
      state.conversation = { ...c, ...envelope.data.conversation };
      renderHead();
    }
    loadMessages().catch(() => {});
  };

  // -- routing ----------------------------------------------------------------------------------
  const route = async () => {
    const parts = location.pathname.split("/").filter(Boolean); // inbox, bot, slug
    try {
      if (parts.length >= 3) {
        const [, chatbotId, slug] = parts;
        if (state.chatbot !== chatbotId) {
          state.chatbot = chatbotId;
          $("chatbot").value = chatbotId;
          listen();
        }
        await openBySlug(chatbotId, decodeURIComponent(slug));
      } else {
        leaveConversation();
        state.conversation = null;
        $("thread-view").hidden = true;
        $("thread-empty").hidden = false;
      }
      await Promise.all([loadCounts(), loadList()]);
    } catch (error) {
      if (error.status === 404) {
        leaveConversation();
        state.conversation = null;
        $("thread-view").hidden = true;
        $("thread-empty").hidden = false;
        $("thread-empty").textContent = "No such conversation.";
      } else if (error.status !== 401) {
        showError(error);
      }
    }
  };

  const start = async () => {
    $("signin-view").hidden = true;
    $("app-view").hidden = false;
    $("signout").hidden = false;
    try {
      await loadChatbots();
    } catch (error) {
      if (error.status !== 401) showError(error);
      return;
    }
    const parts = location.pathname.split("/").filter(Boolean);
    state.chatbot = parts[1] || (state.chatbots[0] && state.chatbots[0].id) || null;
    if (state.chatbot) $("chatbot").value = state.chatbot;
    await route();
    listen();
  };

  if (state.token) start();
  else signOut("");
})();
