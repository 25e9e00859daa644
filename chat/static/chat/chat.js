/* Browser chat: websocket streaming, conversation list, sources, stop/regenerate, feedback.
 *
 * Safety: model output is only ever inserted as text (textContent) while streaming;
 * the finished answer is replaced by the HTML the server rendered and sanitised
 * (markdown-it with raw HTML off + nh3). No raw model text goes through innerHTML.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const T = config.strings;
  const $ = (id) => document.getElementById(id);
  const els = {
    messages: $("messages"),
    welcome: $("welcome"),
    list: $("conversation-list"),
    form: $("composer"),
    input: $("composer-input"),
    send: $("send-button"),
    stop: $("stop-button"),
    alert: $("alert"),
    status: $("connection-status"),
    newChat: $("new-chat"),
    sidebar: $("sidebar"),
    toggle: $("sidebar-toggle"),
    model: $("model-select"), // only when more than one model is offered
  };

  const state = {
    ws: null,
    conversationId: null,
    current: null, // the answer being streamed: {el, body, text, sourcesEl, messageId}
    retries: 0,
    reconnectTimer: null,
    wasConnected: false,
  };

  function fmt(text, values) {
    return text.replace(/\{(\w+)\}/g, (_, k) => (k in values ? values[k] : ""));
  }

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken();
    }
    if (options.method && options.method !== "GET") headers["X-CSRFToken"] = csrfToken();
    const response = await fetch(config.apiBase + path, {
      credentials: "same-origin",
      ...options,
      headers,
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    });
    if (!response.ok && response.status !== 204) {
      const error = new Error("HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return response.status === 204 ? null : response.json();
  }

  // --- alerts and status -------------------------------------------------------

  function showAlert(text) {
    els.alert.textContent = text;
    els.alert.hidden = !text;
  }

  function errorText(frame) {
    switch (frame.code) {
      case "rate_limited":
        return fmt(T.rateLimited, { s: Math.max(1, Math.ceil(frame.retry_after || 1)) });
      case "model_unavailable":
      case "model_busy":
      case "upstream_timeout":
      case "upstream_error":
      case "service_unavailable":
        return T.modelUnavailable;
      case "busy":
        return T.busy;
      case "payload_too_large":
      case "context_length_exceeded":
        return T.tooLong;
      case "not_found":
        return T.notFound;
      case "model_not_found":
        return T.modelNotFound;
      case "budget_exceeded":
        return T.budgetExceeded;
      default:
        return frame.message || T.genericError;
    }
  }

  function setStatus(text) {
    els.status.textContent = text;
  }

  function setBusy(busy) {
    els.send.disabled = busy;
    els.stop.hidden = !busy;
    els.messages.setAttribute("aria-busy", busy ? "true" : "false");
  }

  // --- rendering -----------------------------------------------------------------

  function hideWelcome() {
    if (els.welcome) els.welcome.hidden = true;
  }

  function messageShell(role) {
    hideWelcome();
    const article = document.createElement("article");
    article.className = "message " + role;
    const who = document.createElement("h3");
    who.className = "who visually-hidden";
    who.textContent = role === "user" ? T.you : T.assistant;
    const body = document.createElement("div");
    body.className = "body";
    article.append(who, body);
    els.messages.appendChild(article);
    return { el: article, body };
  }

  function addUserMessage(text) {
    const m = messageShell("user");
    m.body.textContent = text;
    scrollDown();
  }

  function renderSources(container, messageId, sources) {
    container.textContent = "";
    if (!sources || !sources.length) return;
    const title = document.createElement("h4");
    title.textContent = T.sources;
    const list = document.createElement("ol");
    for (const s of sources) {
      const item = document.createElement("li");
      item.id = "src-" + messageId + "-" + s.n;
      if (s.cited) item.classList.add("cited");
      const link = document.createElement("a");
      link.href = s.url;
      link.textContent = s.title || s.url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      const snippet = document.createElement("p");
      snippet.className = "snippet";
      snippet.textContent = s.snippet || "";
      item.append(link, snippet);
      list.appendChild(item);
    }
    container.append(title, list);
  }

  function answerActions(article, messageId, rating) {
    const bar = document.createElement("div");
    bar.className = "actions";
    const up = button("👍", T.helpful, () => rate(messageId, "up", up, down));
    const down = button("👎", T.notHelpful, () => rate(messageId, "down", down, up));
    if (rating === "up") up.setAttribute("aria-pressed", "true");
    if (rating === "down") down.setAttribute("aria-pressed", "true");
    up.setAttribute("aria-pressed", up.getAttribute("aria-pressed") || "false");
    down.setAttribute("aria-pressed", down.getAttribute("aria-pressed") || "false");
    const again = button("↻", T.regenerate, regenerate);
    again.classList.add("regenerate");
    bar.append(up, down, again);
    article.appendChild(bar);
  }

  function button(icon, label, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "icon-button";
    b.title = label;
    b.setAttribute("aria-label", label);
    b.textContent = icon;
    b.addEventListener("click", onClick);
    return b;
  }

  function addAssistantMessage(message) {
    const m = messageShell("assistant");
    if (message.html) {
      m.body.innerHTML = message.html; // server-rendered, sanitised HTML (chat/markdown.py)
    } else {
      m.body.textContent = message.content;
    }
    if (message.status === "partial" || message.status === "streaming") {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = T.partial;
      m.el.appendChild(note);
    }
    const sources = document.createElement("section");
    sources.className = "sources";
    m.el.appendChild(sources);
    renderSources(sources, message.id, message.citations);
    answerActions(m.el, message.id, message.feedback);
    return m;
  }

  function scrollDown() {
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  function clearMessages() {
    for (const node of [...els.messages.children]) {
      if (node !== els.welcome) node.remove();
    }
    if (els.welcome) els.welcome.hidden = false;
  }

  // --- conversations -----------------------------------------------------------------

  async function loadConversations() {
    try {
      const page = await api("conversations/?limit=50");
      els.list.textContent = "";
      for (const c of page.results) addConversationItem(c);
    } catch (e) {
      /* the list is a convenience: chatting still works */
    }
  }

  function addConversationItem(c, prepend) {
    const existing = els.list.querySelector('[data-id="' + c.id + '"]');
    if (existing) existing.remove();
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conversation";
    open.textContent = c.title || T.untitled;
    if (c.id === state.conversationId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => openConversation(c.id));
    const del = button("✕", T.deleteConfirm, () => deleteConversation(c.id));
    del.classList.add("delete");
    li.append(open, del);
    if (prepend) els.list.prepend(li);
    else els.list.appendChild(li);
  }

  function markCurrent() {
    for (const b of els.list.querySelectorAll(".conversation")) {
      const li = b.parentElement;
      if (li.dataset.id === state.conversationId) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
  }

  async function openConversation(id) {
    if (state.current) return showAlert(T.busy);
    state.conversationId = id;
    markCurrent();
    closeSidebar();
    await reloadConversation();
    els.input.focus();
  }

  async function reloadConversation() {
    if (!state.conversationId) return;
    try {
      const messages = await api("conversations/" + state.conversationId + "/messages/");
      clearMessages();
      for (const m of messages) {
        if (m.role === "user") addUserMessage(m.content);
        else addAssistantMessage(m);
      }
      showAlert("");
      scrollDown();
    } catch (e) {
      if (e.status === 404) {
        state.conversationId = null;
        clearMessages();
        showAlert(T.notFound);
      } else {
        showAlert(T.loadFailed);
      }
    }
  }

  async function deleteConversation(id) {
    if (!window.confirm(T.deleteConfirm)) return;
    try {
      await api("conversations/" + id + "/", { method: "DELETE" });
    } catch (e) {
      /* already gone */
    }
    const li = els.list.querySelector('[data-id="' + id + '"]');
    if (li) li.remove();
    if (state.conversationId === id) newChat();
    setStatus(T.deleted);
  }

  function newChat() {
    if (state.current) return showAlert(T.busy);
    state.conversationId = null;
    clearMessages();
    markCurrent();
    showAlert("");
    closeSidebar();
    els.input.focus();
  }

  async function rate(messageId, rating, pressed, other) {
    try {
      await api("messages/" + messageId + "/feedback/", { method: "PUT", body: { rating } });
      pressed.setAttribute("aria-pressed", "true");
      other.setAttribute("aria-pressed", "false");
      setStatus(T.thanks);
    } catch (e) {
      showAlert(T.genericError);
    }
  }

  // --- websocket -------------------------------------------------------------------------

  function connect() {
    clearTimeout(state.reconnectTimer);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + config.wsPath);
    state.ws = ws;
    if (!state.wasConnected) setStatus(T.connecting);
    ws.addEventListener("open", () => {
      const resumed = state.wasConnected;
      state.retries = 0;
      state.wasConnected = true;
      setStatus(T.connected);
      showAlert("");
      if (resumed) {
        // Whatever was streaming when the network dropped was stored (partial) on the server.
        finishCurrent();
        reloadConversation();
      }
    });
    ws.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
    ws.addEventListener("close", () => {
      if (state.ws !== ws) return;
      state.ws = null;
      const delay = Math.min(30, 2 ** state.retries) * (0.75 + Math.random() * 0.5);
      state.retries += 1;
      setStatus(fmt(T.reconnecting, { s: Math.round(delay) }));
      state.reconnectTimer = setTimeout(connect, delay * 1000);
    });
  }

  function sendFrame(frame) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      showAlert(T.connecting);
      return false;
    }
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "start":
        onStart(frame);
        break;
      case "sources":
        if (state.current) renderSources(state.current.sourcesEl, state.current.messageId, frame.sources);
        break;
      case "token":
        if (state.current) {
          state.current.text += frame.text;
          state.current.body.textContent = state.current.text; // text only while streaming
          scrollDown();
        }
        break;
      case "end":
        onEnd(frame);
        break;
      case "error":
        onError(frame);
        break;
      default:
        break; // pong, heartbeat
    }
  }

  function onStart(frame) {
    const isNew = state.conversationId !== frame.conversation_id;
    state.conversationId = frame.conversation_id;
    const m = messageShell("assistant");
    m.el.setAttribute("aria-busy", "true");
    m.body.textContent = "";
    const sources = document.createElement("section");
    sources.className = "sources";
    m.el.appendChild(sources);
    state.current = { el: m.el, body: m.body, text: "", sourcesEl: sources, messageId: frame.message_id };
    if (isNew) {
      addConversationItem({ id: frame.conversation_id, title: state.pendingTitle }, true);
      markCurrent();
    }
  }

  function onEnd(frame) {
    const current = state.current;
    if (!current) return;
    if (frame.html !== undefined && frame.html !== null) current.body.innerHTML = frame.html; // sanitised server-side
    if (frame.citations) renderSources(current.sourcesEl, current.messageId, frame.citations);
    if (frame.status === "partial") {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = frame.stopped ? T.stopped : T.partial;
      current.el.appendChild(note);
    }
    answerActions(current.el, current.messageId, null);
    finishCurrent();
  }

  function onError(frame) {
    showAlert(errorText(frame));
    const current = state.current;
    if (current) {
      if (frame.html) current.body.innerHTML = frame.html; // sanitised server-side
      else if (!current.text) current.el.remove();
      finishCurrent();
    } else if (frame.code !== "busy") {
      setBusy(false);
    }
  }

  function finishCurrent() {
    if (state.current) state.current.el.removeAttribute("aria-busy");
    state.current = null;
    setBusy(false);
  }

  // --- actions -------------------------------------------------------------------------------

  function submit(event) {
    event.preventDefault();
    const content = els.input.value.trim();
    if (!content || state.current) return;
    const frame = { type: "message", content };
    if (state.conversationId) frame.conversation_id = state.conversationId;
    if (els.model) frame.model = els.model.value;
    if (!sendFrame(frame)) return;
    state.pendingTitle = content.slice(0, 80);
    showAlert("");
    addUserMessage(content);
    els.input.value = "";
    setBusy(true);
    els.input.focus();
  }

  function regenerate() {
    if (state.current || !state.conversationId) return;
    const frame = { type: "regenerate", conversation_id: state.conversationId };
    if (els.model) frame.model = els.model.value;
    if (!sendFrame(frame)) return;
    const answers = els.messages.querySelectorAll(".message.assistant");
    if (answers.length) answers[answers.length - 1].remove();
    setBusy(true);
  }

  function stop() {
    sendFrame({ type: "stop" });
    els.input.focus();
  }

  function closeSidebar() {
    els.sidebar.classList.remove("open");
    els.toggle.setAttribute("aria-expanded", "false");
  }

  els.form.addEventListener("submit", submit);
  els.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submit(event);
  });
  els.stop.addEventListener("click", stop);
  els.newChat.addEventListener("click", newChat);
  els.toggle.addEventListener("click", () => {
    const open = els.sidebar.classList.toggle("open");
    els.toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) els.newChat.focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      if (state.current) stop();
      else closeSidebar();
    }
  });

  // The language menu submits its form on change (here, not in an inline handler: the CSP forbids those).
  const language = $("language-select");
  if (language) language.addEventListener("change", () => language.form.submit());

  loadConversations();
  connect();
})();
