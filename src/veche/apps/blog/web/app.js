// Quark's minimal web client: register, sign in, write a blog post, read posts, and chat
// with another user live over the kernel WebSocket. Tokens stay in memory only.
"use strict";

const API = "/api/v1";
const state = { token: null, me: null, conversation: null, socket: null, seen: new Set() };

const $ = (selector) => document.querySelector(selector);

function say(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    // Problem details (RFC 9457): show the human part, keep the code for the log.
    const problem = data || {};
    const error = new Error(problem.detail || problem.title || `HTTP ${response.status}`);
    error.code = problem.code;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 1;
    throw error;
  }
  return data;
}

function fields(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function handle(selector, work) {
  $(selector).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await work(event.target);
    } catch (error) {
      say(error.message, true);
    }
  });
}

async function signIn(email, password) {
  const tokens = await call("POST", "/auth/login", { email, password, device_name: "Quark web" });
  state.token = tokens.access_token;
  state.me = await call("GET", "/blog/users/me");
  $("#whoami").textContent = state.me.username ? `@${state.me.username}` : state.me.display_name;
  $("#username-form").hidden = Boolean(state.me.username);
  for (const id of ["#writing", "#reading", "#messages"]) $(id).hidden = false;
  say(`Signed in as ${state.me.display_name}`);
  await loadPosts();
}

handle("#register-form", async (form) => {
  const { display_name, email, password } = fields(form);
  await call("POST", "/auth/register", { display_name, email, password });
  await signIn(email, password);
});

handle("#login-form", async (form) => {
  const { email, password } = fields(form);
  await signIn(email, password);
});

handle("#username-form", async (form) => {
  state.me = await call("PATCH", "/blog/users/me", { username: fields(form).username });
  $("#whoami").textContent = `@${state.me.username}`;
  form.hidden = true;
  say("Username saved");
});

handle("#blog-form", async (form) => {
  const { slug, title } = fields(form);
  const blog = await call("POST", "/blog/blogs", { slug, title });
  $("#post-form [name=blog]").value = blog.slug;
  say(`Blog ${blog.slug} created`);
});

handle("#post-form", async (form) => {
  const { blog, title, body } = fields(form);
  const paragraphs = body
    .split(/\n+/)
    .filter((line) => line.trim())
    .map((line) => `<p>${escapeHtml(line)}</p>`)
    .join("");
  const post = await call("POST", "/blog/posts", {
    blog,
    title,
    body_html: paragraphs,
    state: "published",
  });
  form.reset();
  $("#post-form [name=blog]").value = blog;
  say(`Published "${post.title}"`);
  await loadPosts();
});

function escapeHtml(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

async function loadPosts() {
  const page = await call("GET", "/blog/posts?limit=20");
  const list = $("#posts");
  list.replaceChildren(
    ...page.items.map((post) => {
      const item = document.createElement("li");
      item.textContent = `${post.title} — ${post.excerpt || ""}`;
      item.dataset.postId = post.id;
      return item;
    }),
  );
}

$("#refresh-posts").addEventListener("click", () => loadPosts().catch((e) => say(e.message, true)));

// -- messages ------------------------------------------------------------------------------

function showMessage(message) {
  if (state.seen.has(message.id)) return;
  state.seen.add(message.id);
  const item = document.createElement("li");
  item.dataset.seq = message.seq;
  item.className = message.sender_id === state.me.id ? "mine" : "theirs";
  item.textContent = message.deleted ? "(deleted)" : message.body;
  $("#message-list").append(item);
}

function openSocket(conversationId) {
  if (state.socket) state.socket.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${API}/realtime/ws`);
  const channel = `conversation:${conversationId}`;
  let typingTimer = null;
  socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", token: state.token })));
  socket.addEventListener("message", (raw) => {
    const frame = JSON.parse(raw.data);
    if (frame.type === "welcome") {
      socket.send(JSON.stringify({ type: "subscribe", channel, ref: "sub" }));
    } else if (frame.type === "subscribed") {
      $("#message-form").hidden = false;
      say("Connected");
    } else if (frame.type === "message" && frame.channel === channel) {
      if (frame.event === "message.created") showMessage(frame.data);
      if (frame.event === "typing" && frame.data.user_id !== state.me.id) {
        $("#typing").textContent = frame.data.typing ? "typing…" : "";
        clearTimeout(typingTimer);
        typingTimer = setTimeout(() => ($("#typing").textContent = ""), 5000);
      }
    } else if (frame.type === "error") {
      say(frame.detail, true);
    }
  });
  state.socket = socket;
}

handle("#conversation-form", async (form) => {
  const other = await call("GET", `/blog/users/${encodeURIComponent(fields(form).username)}`);
  const conversation = await call("POST", "/blog/conversations", {
    kind: "direct",
    member_ids: [other.id],
  });
  state.conversation = conversation;
  state.seen.clear();
  $("#message-list").replaceChildren();
  const history = await call("GET", `/blog/conversations/${conversation.id}/messages?limit=50`);
  history.items.forEach(showMessage);
  openSocket(conversation.id);
});

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

handle("#message-form", async (form) => {
  if (!state.conversation) throw new Error("Open a conversation first");
  const input = form.querySelector("[name=body]");
  // One id for every attempt: a retry of a message the server did store returns it again.
  const sent = { body: input.value, client_id: crypto.randomUUID() };
  const path = `/blog/conversations/${state.conversation.id}/messages`;
  let message;
  for (let attempt = 1; ; attempt += 1) {
    try {
      message = await call("POST", path, sent);
      break;
    } catch (error) {
      if (error.code !== "server_busy" || attempt === 3) throw error;
      say("The server is busy, sending again…");
      await sleep(error.retryAfter);
    }
  }
  input.value = "";
  showMessage(message);
});

$("#message-form [name=body]").addEventListener("input", () => {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || !state.conversation) return;
  socket.send(
    JSON.stringify({
      type: "publish",
      channel: `conversation:${state.conversation.id}`,
      event: "typing",
      data: { typing: true },
    }),
  );
});
