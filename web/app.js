// chatroom's web page: the server's JSON mode over a WebSocket (/ws).
//
// One event per frame comes in; one command or chat line per frame goes out
// (docs/PROTOCOL.md). Everything from the network is put on the page as text
// (textContent), never as HTML; links are built as elements, and only
// http, https and mailto become links.
"use strict";

const TOKEN_KEY = "chatroom.token";
const KEEP_MESSAGES = 3000; // per conversation; older ones are dropped from the page
const PAGE = 50; // messages asked for at a time when scrolling back
const RETRY_FIRST = 1000;
const RETRY_MAX = 15000;

const $ = (id) => document.getElementById(id);

const state = {
  ws: null,
  connected: false,
  roomsPending: false,
  loggedIn: false,
  everLoggedIn: false,
  private: false,
  name: null,
  role: null,
  token: localStorage.getItem(TOKEN_KEY),
  triedToken: false,
  room: null, // the room the server has us in
  view: null, // what the page shows: "#room" or "@name"
  rooms: new Map(), // folded name -> {name, members, unread, mentions}
  dms: new Map(), // folded name -> {name, unread}
  people: [], // in the current room
  known: new Set(), // names seen, for Tab
  views: new Map(), // key -> {messages: [], ids: Set, start: bool}
  lastSeen: new Map(), // folded room -> highest id seen there
  block: null, // {kind: "replay" | "older" | "search", room, items: []}
  olderAsked: null, // {room, before} while a page back is on its way
  fillGap: null, // {room, upto} after a reconnect
  searching: null,
  listPage: 0,
  retry: RETRY_FIRST,
  hiddenCount: 0,
  readTimer: null,
};

const fold = (s) => (s || "").toLowerCase();

// ---- connection --------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.connected = true;
    state.retry = RETRY_FIRST;
    state.triedToken = false;
    showStatus(state.everLoggedIn ? "Reconnected, logging in…" : "");
  };
  ws.onmessage = (frame) => {
    let event;
    try {
      event = JSON.parse(frame.data);
    } catch {
      return;
    }
    handle(event);
  };
  ws.onclose = () => {
    const wasIn = state.loggedIn;
    state.connected = false;
    state.loggedIn = false;
    state.block = null;
    state.olderAsked = null;
    if (state.leaving) return;
    if (state.replaced) {
      showStatus("You are logged in on another device or tab. Reload to use this one.");
      return;
    }
    const wait = state.retry;
    state.retry = Math.min(state.retry * 2, RETRY_MAX);
    showStatus(`${wasIn ? "Connection lost" : "Cannot reach the server"}; trying again in ${Math.round(wait / 1000)} s…`);
    setTimeout(connect, wait);
  };
}

function send(line) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(line);
    return true;
  }
  return false;
}

function showStatus(text) {
  const status = $("status");
  status.textContent = text;
  status.hidden = !text;
}

// ---- events from the server -----------------------------------------------

function handle(e) {
  switch (e.type) {
    case "hello":
      state.private = !!e.private;
      $("login-hello").textContent = e.private
        ? "This server is private: log in with your account."
        : "Choose a name to chat with.";
      break;
    case "prompt":
      onPrompt(e.field);
      break;
    case "welcome":
      onWelcome(e);
      break;
    case "token":
      state.token = e.token;
      localStorage.setItem(TOKEN_KEY, e.token);
      break;
    case "room":
      onRoom(e.room);
      break;
    case "members":
      if (e.room && state.room && fold(e.room) === fold(state.room)) {
        state.people = e.members.slice();
        e.members.forEach((m) => state.known.add(m));
        setRoomCount(e.room, e.members.length);
        renderPeople();
      }
      break;
    case "history":
      onBlockStart(e);
      break;
    case "history_end":
      onBlockEnd(e);
      break;
    case "search":
      state.block = { kind: "search", items: [] };
      break;
    case "search_end":
      onSearchEnd(e);
      break;
    case "message":
      onMessage(e);
      break;
    case "whisper":
      onWhisper(e);
      break;
    case "join":
      onJoin(e);
      break;
    case "leave":
    case "quit":
      onLeave(e);
      break;
    case "rooms":
      onRooms(e);
      break;
    case "room_created":
      upsertRoom(e.room, 0);
      renderRooms();
      break;
    case "unread":
      for (const r of e.rooms || []) {
        const room = upsertRoom(r.room);
        room.unread = r.unread;
        room.mentions = r.mentions;
      }
      renderRooms();
      updateTitle();
      break;
    case "users":
      systemLine(`Online (${e.total ?? e.users.length}): ` +
        e.users.map((u) => `${u.name} in ${u.room ? "#" + u.room : "the lobby"}`).join(", "));
      e.users.forEach((u) => state.known.add(u.name));
      break;
    case "help":
      systemLine("Commands: " + e.commands.map((c) => c.usage).join("  "));
      break;
    case "error":
      onError(e.text);
      break;
    case "bye":
      state.leaving = true;
      break;
    case "shutdown":
      systemLine(e.text);
      break;
    case "mode":
      break;
    default:
      if (e.text) systemLine(e.text);
  }
}

function onPrompt(field) {
  if (field === "name") {
    if (state.token && !state.triedToken) {
      state.triedToken = true;
      send(`/resume ${state.token}`);
      return;
    }
    if (state.everLoggedIn && state.name && !state.private) {
      // An open server and no token: take the same name again.
      send(state.name);
      return;
    }
    if (state.pendingName !== undefined && state.pendingName !== null) {
      // Typed before the connection was open.
      const name = state.pendingName;
      state.pendingName = null;
      send(name);
      return;
    }
    showLogin();
  } else if (field === "password") {
    $("password-row").hidden = false;
    $("password").focus();
  }
}

function showLogin() {
  $("login").hidden = false;
  $("app").hidden = true;
  $("login-button").disabled = false;
  $("name").focus();
}

function onWelcome(e) {
  state.loggedIn = true;
  state.name = e.name;
  state.role = e.role;
  state.known.add(e.name);
  $("password").value = "";
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = `${e.name}${e.role === "admin" ? " (admin)" : ""}`;
  showStatus("");
  if (!state.token) send("/token");
  send("/unread");
  state.listPage = 1;
  send("/list");
  if (!state.everLoggedIn) $("message").focus();
  updateNotifyButton();
  state.rejoin = state.everLoggedIn ? state.room : null;
  state.everLoggedIn = true;
}

function onError(text) {
  if (!state.loggedIn) {
    if (/token is not valid/.test(text)) {
      state.token = null;
      localStorage.removeItem(TOKEN_KEY);
      return; // the name prompt follows
    }
    if (/logged in again from another connection/.test(text)) {
      state.replaced = true;
    }
    $("login-error").textContent = text;
    $("login-button").disabled = false;
    if (/password/.test(text)) {
      $("password").value = "";
      $("password-row").hidden = true;
    }
    return;
  }
  if (/logged in again from another connection/.test(text)) {
    state.replaced = true;
  }
  if (state.olderAsked && /history/.test(text)) {
    // The page back was refused (in the lobby, say): stop asking.
    finishOlder(state.olderAsked.room, [], true);
  }
  errorLine(text);
}

function onRoom(room) {
  const before = state.room;
  state.room = room;
  state.people = [];
  if (before) setRoomCount(before, Math.max(0, (roomOf(before)?.members || 1) - 1));
  if (room) {
    upsertRoom(room);
    if (state.rejoin && fold(state.rejoin) !== fold(room)) {
      // Back after a reconnect: return to the room we were in.
      const target = state.rejoin;
      state.rejoin = null;
      send(`/join ${target}`);
    } else {
      state.rejoin = null;
    }
    switchView(`#${room}`);
  } else {
    state.rejoin = null;
    switchView(null);
  }
  renderPeople();
}

// A page of `/history` says what it is older than; a join's replay does not.
function onBlockStart(e) {
  const older = e.before !== undefined && e.before !== null;
  state.block = { kind: older ? "older" : "replay", room: e.room, items: [] };
}

function onBlockEnd(e) {
  const block = state.block;
  state.block = null;
  if (!block) return;
  if (block.kind === "older") {
    finishOlder(block.room, block.items, e.more === false);
  } else {
    const view = viewOf(`#${block.room}`);
    const seen = state.lastSeen.get(fold(block.room));
    block.items.forEach((m) => addMessage(view, m, false));
    trim(view);
    if (state.view === `#${block.room}`) renderView(true);
    // After a reconnect: fetch what was said while we were away.
    const first = block.items.length ? block.items[0].id : null;
    if (seen !== undefined && first !== null && first > seen + 1) {
      state.fillGap = { room: block.room, upto: seen };
      askOlder(block.room, first, 200);
    }
  }
}

function finishOlder(room, items, atStart) {
  const asked = state.olderAsked;
  state.olderAsked = null;
  const view = viewOf(`#${room}`);
  const fresh = items.filter((m) => !view.ids.has(m.id));
  if (atStart || items.length === 0) view.start = true;
  const logEl = $("log");
  const before = logEl.scrollHeight - logEl.scrollTop;
  fresh.forEach((m) => addMessage(view, m, true));
  view.messages.sort((a, b) => a.id - b.id);
  if (state.view === `#${room}`) {
    renderView(false);
    // Keep the reading position: what was on screen stays on screen.
    logEl.scrollTop = logEl.scrollHeight - before;
  }
  const gap = state.fillGap;
  if (gap && fold(gap.room) === fold(room) && items.length) {
    const oldest = items[0].id;
    if (oldest > gap.upto + 1) {
      askOlder(room, oldest, 200);
      return;
    }
    state.fillGap = null;
  } else if (gap && fold(gap.room) === fold(room)) {
    state.fillGap = null;
  }
  if (asked) updateOlderNote();
}

function askOlder(room, before, count) {
  if (state.olderAsked) return;
  state.olderAsked = { room, before };
  updateOlderNote();
  send(`/history before ${before} ${count || PAGE}`);
}

function onMessage(m) {
  state.known.add(m.from);
  if (state.block && state.block.kind !== "search") {
    state.block.items.push(m);
    return;
  }
  if (state.block && state.block.kind === "search") {
    state.block.items.push({ ...m, kind: "message" });
    return;
  }
  const view = viewOf(`#${m.room}`);
  const shown = addMessage(view, m, false);
  if (!shown) return;
  trim(view);
  const mine = fold(m.from) === fold(state.name);
  const mention = !mine && mentions(m.text);
  if (state.view === `#${m.room}`) {
    appendRow(m, false);
    if (mention) notify(`${m.from} in #${m.room}`, m.text);
  } else if (mention) {
    notify(`${m.from} in #${m.room}`, m.text);
  }
  scheduleRead();
}

function onWhisper(w) {
  if (state.block && state.block.kind === "search") {
    state.block.items.push({ ...w, kind: "whisper" });
    return;
  }
  const partner = fold(w.from) === fold(state.name) ? w.to : w.from;
  state.known.add(partner);
  const dm = state.dms.get(fold(partner)) || { name: partner, unread: 0 };
  state.dms.set(fold(partner), dm);
  const view = viewOf(`@${partner}`);
  if (!addMessage(view, { ...w, whisper: true }, false)) return;
  trim(view);
  const fromThem = fold(w.from) !== fold(state.name);
  if (state.view === `@${partner}`) {
    appendRow({ ...w, whisper: true }, false);
  }
  if (fromThem && (state.view !== `@${partner}` || document.hidden)) {
    if (state.view !== `@${partner}`) dm.unread += 1;
    notify(`${w.from} whispers`, w.text);
  }
  renderRooms();
}

function onJoin(e) {
  state.known.add(e.name);
  if (e.room && state.room && fold(e.room) === fold(state.room)) {
    if (!state.people.some((p) => fold(p) === fold(e.name))) state.people.push(e.name);
    setRoomCount(e.room, state.people.length);
    renderPeople();
    systemLine(`${e.name} joined #${e.room}`);
  }
}

function onLeave(e) {
  state.people = state.people.filter((p) => fold(p) !== fold(e.name));
  if (e.room) {
    const room = roomOf(e.room);
    if (room) setRoomCount(e.room, Math.max(0, room.members - 1));
  }
  renderPeople();
  systemLine(e.type === "quit" ? `${e.name} left the chat` : `${e.name} left #${e.room}`);
}

function onRooms(e) {
  for (const r of e.rooms) upsertRoom(r.name, r.members);
  renderRooms();
  // The side list holds every room: ask for the next page while there is one.
  if (e.page && e.pages && e.page < e.pages && state.listPage === e.page) {
    state.listPage = e.page + 1;
    send(`/list ${state.listPage}`);
  }
}

function onSearchEnd() {
  const block = state.block;
  state.block = null;
  const items = block ? block.items : [];
  const query = state.searching || "";
  $("results-title").textContent = items.length
    ? `${items.length} message${items.length === 1 ? "" : "s"} with “${query}”, newest first`
    : `Nothing found for “${query}”`;
  $("results-bar").hidden = false;
  const list = $("messages");
  list.replaceChildren();
  $("older").textContent = "";
  for (const item of items) list.append(row(item, { withRoom: true }));
  $("log").scrollTop = 0;
  state.inResults = true;
}

// ---- conversations ------------------------------------------------------

function viewOf(key) {
  let view = state.views.get(key);
  if (!view) {
    view = { messages: [], ids: new Set(), start: false };
    state.views.set(key, view);
  }
  return view;
}

// Adds a message to a conversation once; false if it was there already.
function addMessage(view, m, older) {
  if (m.id != null && view.ids.has(m.id)) return false;
  if (m.id != null) view.ids.add(m.id);
  if (older) view.messages.unshift(m);
  else view.messages.push(m);
  if (m.room && m.id != null) {
    const key = fold(m.room);
    state.lastSeen.set(key, Math.max(state.lastSeen.get(key) || 0, m.id));
  }
  return true;
}

// At most KEEP_MESSAGES stay in the page, so a long day does not slow it down.
function trim(view) {
  const extra = view.messages.length - KEEP_MESSAGES;
  if (extra > 0) {
    for (const m of view.messages.splice(0, extra)) view.ids.delete(m.id);
    view.start = false;
  }
}

function switchView(key) {
  // What was on screen has been read: mark it before moving on.
  if (state.view && state.view !== key) markRead();
  state.view = key;
  state.inResults = false;
  $("results-bar").hidden = true;
  const label = key ? key : "the lobby";
  $("title").textContent = label;
  $("message").placeholder = key && key.startsWith("@")
    ? `Whisper to ${key.slice(1)}`
    : key ? `Message ${key} — /help lists the commands` : "You are in the lobby: /join ROOM or pick a room";
  if (key && key.startsWith("@")) {
    const dm = state.dms.get(fold(key.slice(1)));
    if (dm) dm.unread = 0;
  }
  renderView(true);
  renderRooms();
  updateTitle();
  scheduleRead();
  closeDrawers();
}

function renderView(toBottom) {
  const list = $("messages");
  list.replaceChildren();
  const view = state.view ? viewOf(state.view) : null;
  if (view) {
    const fragment = document.createDocumentFragment();
    for (const m of view.messages) fragment.append(row(m, {}));
    list.append(fragment);
  }
  updateOlderNote();
  if (toBottom) $("log").scrollTop = $("log").scrollHeight;
}

function updateOlderNote() {
  const note = $("older");
  const view = state.view ? state.views.get(state.view) : null;
  if (!view || !state.view.startsWith("#")) {
    note.textContent = "";
  } else if (state.olderAsked) {
    note.textContent = "Loading older messages…";
  } else if (view.start) {
    note.textContent = `This is the start of ${state.view}.`;
  } else {
    note.textContent = "Scroll up for older messages";
  }
}

function atBottom() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

function appendRow(m, system) {
  if (state.inResults) return;
  const stick = atBottom();
  const list = $("messages");
  list.append(system ? systemRow(m) : row(m, {}));
  while (list.children.length > KEEP_MESSAGES + 200) list.firstElementChild.remove();
  if (stick) $("log").scrollTop = $("log").scrollHeight;
}

function systemLine(text) {
  appendRow({ text, system: true }, true);
}

function errorLine(text) {
  appendRow({ text, error: true }, true);
}

function systemRow(m) {
  const li = document.createElement("li");
  li.className = m.error ? "msg system error" : "msg system";
  li.textContent = m.text;
  return li;
}

function clock(time) {
  const d = new Date(time);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function row(m, { withRoom }) {
  const li = document.createElement("li");
  li.className = "msg";
  if (m.id != null) li.dataset.id = String(m.id);
  const whisper = m.whisper || m.kind === "whisper";
  if (whisper) li.classList.add("whisper");
  if (!whisper && fold(m.from) !== fold(state.name) && mentions(m.text)) li.classList.add("mention");
  const time = document.createElement("time");
  time.dateTime = m.time || "";
  time.textContent = clock(m.time);
  li.append(time);
  if (withRoom) {
    const where = document.createElement("span");
    where.className = "room";
    where.textContent = whisper ? `whisper ${m.from} → ${m.to}` : `#${m.room}`;
    li.append(where);
  }
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = whisper && !withRoom && fold(m.from) === fold(state.name) ? `${m.from} → ${m.to}` : m.from;
  li.append(from);
  const text = document.createElement("span");
  text.className = "text";
  appendLinked(text, m.text || "");
  li.append(text);
  return li;
}

// Puts text into `el`, with http, https and mailto addresses as links built
// as elements: nothing from the network is ever parsed as HTML.
function appendLinked(el, text) {
  const pattern = /\b(?:https?:\/\/|mailto:)[^\s<>"']+/gi;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    let url = match[0].replace(/[.,;:!?)\]]+$/, "");
    const start = match.index;
    if (start > last) el.append(document.createTextNode(text.slice(last, start)));
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      parsed = null;
    }
    if (parsed && ["http:", "https:", "mailto:"].includes(parsed.protocol)) {
      const a = document.createElement("a");
      a.href = parsed.href;
      a.textContent = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      el.append(a);
    } else {
      el.append(document.createTextNode(url));
    }
    last = start + url.length;
  }
  if (last < text.length) el.append(document.createTextNode(text.slice(last)));
}

function mentions(text) {
  if (!state.name || !text) return false;
  const me = fold(state.name);
  return text
    .split(/\s+/)
    .map((w) => fold(w.replace(/^@/, "").replace(/[,.:;!?)'"]+$/, "")))
    .includes(me);
}

// ---- side panes ---------------------------------------------------------

function roomOf(name) {
  return state.rooms.get(fold(name));
}

function upsertRoom(name, members) {
  let room = state.rooms.get(fold(name));
  if (!room) {
    room = { name, members: 0, unread: 0, mentions: 0 };
    state.rooms.set(fold(name), room);
  }
  if (members !== undefined) room.members = members;
  return room;
}

function setRoomCount(name, count) {
  upsertRoom(name).members = count;
  renderRooms();
}

// The side list is drawn at most once a frame, however many events change
// it meanwhile (a join, a count, a page of /list, the switch of a room).
function renderRooms() {
  if (state.roomsPending) return;
  state.roomsPending = true;
  const draw = () => {
    state.roomsPending = false;
    drawRooms();
  };
  if (document.hidden) setTimeout(draw, 100);
  else requestAnimationFrame(draw);
}

function drawRooms() {
  const list = $("rooms");
  list.replaceChildren();
  const rooms = [...state.rooms.values()].sort((a, b) => fold(a.name).localeCompare(fold(b.name)));
  for (const room of rooms) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    const current = state.view === `#${room.name}` || (state.room && fold(state.room) === fold(room.name) && state.view && state.view.startsWith("#"));
    button.setAttribute("aria-current", current ? "true" : "false");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `#${room.name}`;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = String(room.members);
    count.title = `${room.members} here`;
    button.append(name);
    const here = state.room && fold(state.room) === fold(room.name);
    if (!here && room.unread > 0) {
      const badge = document.createElement("span");
      badge.className = room.mentions > 0 ? "badge mention" : "badge";
      badge.textContent = room.unread >= 1000 ? "999+" : String(room.unread);
      badge.title = `${room.unread} unread, ${room.mentions} mentioning you`;
      button.append(badge);
    }
    button.append(count);
    button.addEventListener("click", () => {
      if (state.room && fold(state.room) === fold(room.name)) switchView(`#${room.name}`);
      else send(`/join ${room.name}`);
    });
    li.append(button);
    list.append(li);
  }
  const dms = $("dms");
  dms.replaceChildren();
  for (const dm of state.dms.values()) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-current", state.view === `@${dm.name}` ? "true" : "false");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = dm.name;
    button.append(name);
    if (dm.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "badge mention";
      badge.textContent = String(dm.unread);
      button.append(badge);
    }
    button.addEventListener("click", () => switchView(`@${dm.name}`));
    li.append(button);
    dms.append(li);
  }
}

function renderPeople() {
  const list = $("people");
  list.replaceChildren();
  $("people-title").textContent = state.room ? `In #${state.room} (${state.people.length})` : "People";
  for (const person of [...state.people].sort((a, b) => fold(a).localeCompare(fold(b)))) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = person;
    button.title = `Whisper to ${person}`;
    button.addEventListener("click", () => {
      if (fold(person) === fold(state.name)) return;
      if (!state.dms.has(fold(person))) state.dms.set(fold(person), { name: person, unread: 0 });
      switchView(`@${person}`);
      $("message").focus();
    });
    li.append(button);
    list.append(li);
  }
}

// ---- reading marks, notifications, title --------------------------------

function scheduleRead() {
  clearTimeout(state.readTimer);
  state.readTimer = setTimeout(markRead, 800);
}

function markRead() {
  if (document.hidden || !state.loggedIn || !state.view || !state.view.startsWith("#")) return;
  if (!atBottom() && !state.inResults) return;
  const room = state.view.slice(1);
  const view = state.views.get(state.view);
  if (!view || !view.messages.length) return;
  const last = view.messages[view.messages.length - 1].id;
  const known = roomOf(room);
  if (view.marked === last && known && known.unread === 0) return;
  view.marked = last;
  if (known) {
    known.unread = 0;
    known.mentions = 0;
  }
  send(`/read ${room} ${last}`);
  renderRooms();
}

function notify(title, body) {
  if (!document.hidden) return;
  state.hiddenCount += 1;
  updateTitle();
  if ("Notification" in window && Notification.permission === "granted") {
    try {
      new Notification(title, { body, tag: "chatroom" });
    } catch {
      // Some browsers only notify from a service worker; the title still counts.
    }
  }
}

function updateTitle() {
  const base = state.view ? `${state.view} · chatroom` : "chatroom";
  document.title = state.hiddenCount > 0 ? `(${state.hiddenCount}) ${base}` : base;
}

function updateNotifyButton() {
  const button = $("notify");
  button.hidden = !("Notification" in window) || Notification.permission !== "default";
}

// ---- what the user does -----------------------------------------------------

function closeDrawers() {
  $("side").classList.remove("open");
  $("people-pane").classList.remove("open");
  $("scrim").hidden = true;
}

function setup() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    if (!$("password-row").hidden) {
      send($("password").value);
      return;
    }
    const name = $("name").value.trim();
    if (!name && state.private) {
      $("login-error").textContent = "Enter your account name.";
      return;
    }
    if (send(name)) $("login-button").disabled = true;
    else state.pendingName = name;
  });

  $("compose").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("message");
    const text = input.value;
    if (!text.trim()) return;
    let line = text;
    if (state.view && state.view.startsWith("@") && !text.startsWith("/")) {
      line = `/msg ${state.view.slice(1)} ${text}`;
    }
    if (/^\/logout\b/i.test(text)) {
      logout();
      input.value = "";
      return;
    }
    if (send(line)) input.value = "";
    else systemLine("Not connected; the line is kept and can be sent once reconnected.");
  });

  $("message").addEventListener("keydown", (ev) => {
    if (ev.key !== "Tab") return;
    const input = ev.target;
    const upto = input.value.slice(0, input.selectionStart);
    const match = upto.match(/(\S+)$/);
    if (!match) return;
    const word = match[1].replace(/^@/, "");
    const candidates = [...state.known, ...state.people]
      .filter((n) => fold(n).startsWith(fold(word)) && fold(n) !== fold(word));
    if (!candidates.length) return;
    ev.preventDefault();
    const name = candidates.sort((a, b) => a.length - b.length)[0];
    const start = upto.length - word.length;
    const suffix = start === 0 ? ": " : " ";
    input.value = input.value.slice(0, start) + name + suffix + input.value.slice(input.selectionStart);
    const at = start + name.length + suffix.length;
    input.setSelectionRange(at, at);
  });

  $("log").addEventListener("scroll", () => {
    if (state.inResults) return;
    if ($("log").scrollTop < 80 && state.view && state.view.startsWith("#")) {
      const view = viewOf(state.view);
      if (!view.start && !state.olderAsked && view.messages.length) {
        askOlder(state.view.slice(1), view.messages[0].id, PAGE);
      } else if (!view.messages.length && !view.start && !state.olderAsked && state.room) {
        view.start = true;
        updateOlderNote();
      }
    }
    if (atBottom()) scheduleRead();
  });

  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const query = $("search").value.trim();
    if (!query) return;
    state.searching = query;
    send(`/search ${query}`);
  });
  $("close-results").addEventListener("click", () => {
    state.inResults = false;
    $("results-bar").hidden = true;
    renderView(true);
  });

  $("new-room").addEventListener("click", () => {
    const name = prompt("Name of the new room (letters, digits, - and _):");
    if (name && name.trim()) send(`/create ${name.trim()}`);
  });
  $("logout").addEventListener("click", logout);
  $("notify").addEventListener("click", () => {
    Notification.requestPermission().finally(updateNotifyButton);
  });

  $("open-rooms").addEventListener("click", () => {
    $("side").classList.add("open");
    $("scrim").hidden = false;
  });
  $("open-people").addEventListener("click", () => {
    $("people-pane").classList.add("open");
    $("scrim").hidden = false;
  });
  $("scrim").addEventListener("click", closeDrawers);

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      state.hiddenCount = 0;
      updateTitle();
      scheduleRead();
    }
  });

  $("name").focus();
  connect();
}

function logout() {
  state.leaving = true;
  send("/logout");
  state.token = null;
  localStorage.removeItem(TOKEN_KEY);
  setTimeout(() => location.reload(), 300);
}

document.addEventListener("DOMContentLoaded", setup);
