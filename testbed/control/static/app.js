// The testbed's dashboard: one view per hash (#mail, #faults...), each drawn from the control API and
// redrawn when the journal's Server-Sent Events say something changed. No framework, no build step.
"use strict";

const API = "/api/v1";
const state = { view: "overview", mail: {}, connection: null, drawing: false, dirty: false };

// -- talking to the API ---------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    ...options,
    headers: { "content-type": "application/json", ...(options.headers || {}) },
  });
  const type = response.headers.get("content-type") || "";
  const body = type.startsWith("application/json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body.error || String(body));
  return body;
}

// -- building the page safely (text is always text, never HTML) ---------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headings, rows) {
  return el("table", {}, el("tr", {}, headings.map((h) => el("th", {}, h))), rows);
}

function time(t) {
  // The journal's clock is monotonic (seconds since some start), so show it as such, not as a date.
  return t == null ? "" : `${t.toFixed(3)} s`;
}

function show(...nodes) {
  document.getElementById("view").replaceChildren(...nodes);
}

// -- views -------------------------------------------------------------------------------

const views = {
  async overview() {
    const [info, stats, connections] = await Promise.all([api("/info"), api("/faults/stats"),
      api("/connections")]);
    let users = [];
    try { users = await api("/mail/users"); } catch (e) { /* no mail servers in this scenario */ }
    const messages = users.reduce((n, u) => n + u.messages, 0);
    show(
      el("h2", {}, "Overview"),
      el("div", { class: "cards" },
        card("seed", info.seed), card("servers", info.servers.length), card("connections", connections.length),
        card("messages", messages), card("faults fired", stats.fired)),
      el("p", {}, "Scenario ", el("code", {}, info.scenario), " · version ", info.version, " · ",
        el("a", { href: API + "/ca.pem", download: "testbed-ca.pem" }, "download the CA certificate"), " · ",
        el("a", { href: API + "/docs" }, "API reference")),
      el("h3", {}, "Listeners"),
      table(["server", "protocol", "listener", "address"], info.listeners.map((l) =>
        el("tr", {}, el("td", {}, l.server), el("td", {}, l.protocol), el("td", {}, l.label),
          el("td", {}, el("code", {}, l.url))))),
    );
  },

  async mail() {
    const users = await api("/mail/users");
    const m = state.mail;
    if (!m.user || !users.some((u) => u.address === m.user)) m.user = users.length ? users[0].address : null;
    const base = m.user && `/mail/users/${encodeURIComponent(m.user)}`;
    const messages = base ? await api(`${base}/messages` + (m.search ? `?text=${encodeURIComponent(m.search)}` : "")) : [];
    const search = el("input", { id: "mail-search", placeholder: "search text", value: m.search || "" });
    search.addEventListener("change", () => { m.search = search.value; redraw(); });
    const inbox = table(["from", "subject", "size"], messages.slice().reverse().map((msg) =>
      el("tr", { class: "clickable" + (msg.uid === m.uid ? " selected" : ""), "data-uid": msg.uid,
        onclick: () => { m.uid = msg.uid; redraw(); } },
        el("td", {}, msg.from || ""), el("td", {}, msg.subject || "(no subject)"), el("td", {}, msg.size))));
    const reader = el("div", { class: "pane", id: "mail-reader" });
    if (m.uid && messages.some((x) => x.uid === m.uid)) await drawMessage(reader, base, m.uid);
    show(
      el("h2", {}, "Mail"),
      el("p", {}, el("select", { id: "mail-user", onchange: (e) => { m.user = e.target.value; m.uid = null; redraw(); } },
        users.map((u) => el("option", { value: u.address, selected: u.address === m.user },
          `${u.address} (${u.messages})`))), " ", search, " ",
        base && el("button", { class: "danger", onclick: async () => {
          await api(`${base}/messages`, { method: "DELETE" }); m.uid = null; redraw(); } }, "delete all")),
      el("div", { class: "split" }, el("div", { class: "pane", id: "inbox" }, inbox), reader),
    );
  },

  async http() {
    const servers = await serversOf("http");
    const parts = [el("h2", {}, "HTTP")];
    for (const name of servers) {
      const [requests, routes] = await Promise.all([api(`/servers/${name}/requests`), api(`/servers/${name}/routes`)]);
      parts.push(el("h3", {}, `${name}: requests`),
        table(["conn", "method", "path", "query", "size", "tls", "matched"], requests.map((r) =>
          el("tr", {}, el("td", {}, r.conn), el("td", {}, r.method), el("td", {}, el("code", {}, r.path)),
            el("td", {}, r.query), el("td", {}, r.size), el("td", {}, r.tls ? "yes" : ""),
            el("td", { class: r.matched ? "" : "fault-held" }, r.matched ? r.matched : r.near_miss
              ? `no route; nearest ${r.near_miss.route} (differs in ${r.near_miss.missed.join(", ")})` : "no route")))),
        el("h3", {}, `${name}: routes`),
        table(["method", "path", "status", "hits", "added"], routes.map((r) =>
          el("tr", {}, el("td", {}, r.method), el("td", {}, el("code", {}, r.path)), el("td", {}, r.status),
            el("td", {}, r.hits), el("td", {}, r.runtime ? "at runtime" : "scenario")))));
    }
    show(...parts);
  },

  async dns() {
    const parts = [el("h2", {}, "DNS")];
    for (const name of await serversOf("dns")) {
      const queries = await api(`/servers/${name}/queries`);
      parts.push(el("h3", {}, `${name}: queries`),
        table(["conn", "name", "type", "transport", "rcode", "answer", "fault"], queries.map((q) =>
          el("tr", {}, el("td", {}, q.conn), el("td", {}, el("code", {}, q.name)), el("td", {}, q.type),
            el("td", {}, q.transport), el("td", {}, q.rcode), el("td", {}, q.answer.join("\n")),
            el("td", {}, q.fault || "")))));
    }
    show(...parts);
  },

  async ftp() {
    const parts = [el("h2", {}, "FTP")];
    for (const name of await serversOf("ftp")) {
      const [files, uploads] = await Promise.all([api(`/servers/${name}/files`), api(`/servers/${name}/uploads`)]);
      parts.push(el("h3", {}, `${name}: files`),
        table(["path", "size"], Object.entries(files).map(([path, size]) =>
          el("tr", {}, el("td", {}, el("a", { href: `${API}/servers/${name}/files/${path}` }, path)),
            el("td", {}, size)))),
        el("h3", {}, `${name}: uploads`),
        table(["conn", "path", "size", "user", "command"], uploads.map((u) =>
          el("tr", {}, el("td", {}, u.conn), el("td", {}, u.path), el("td", {}, u.size), el("td", {}, u.user || ""),
            el("td", {}, u.command)))));
    }
    show(...parts);
  },

  async connections() {
    const rows = await api("/connections");
    const detail = el("div", { class: "pane", id: "conversation" });
    const chosen = state.connection;
    if (chosen) await drawConversation(detail, chosen.server, chosen.conn);
    show(
      el("h2", {}, "Connections"),
      el("div", { class: "split" },
        el("div", { class: "pane" }, table(["server", "conn", "peer", "opened", "bytes ↑/↓", "faults"],
          rows.slice().reverse().map((r) => el("tr", {
            class: "clickable" + (chosen && chosen.server === r.server && chosen.conn === r.conn ? " selected" : ""),
            "data-conn": `${r.server}/${r.conn}`,
            onclick: () => { state.connection = { server: r.server, conn: r.conn }; redraw(); } },
          el("td", {}, r.server), el("td", {}, r.conn), el("td", {}, r.peer || ""), el("td", {}, time(r.opened)),
          el("td", {}, r.bytes_up == null ? "open" : `${r.bytes_up} / ${r.bytes_down}`),
          el("td", { class: r.faults ? "fault-fired" : "" }, r.faults))))),
        detail),
    );
  },

  async faults() {
    const [stats, catalog, fired] = await Promise.all([api("/faults/stats"), api("/catalog"),
      api("/journal?kind=fault&limit=1000")]);
    show(
      el("h2", {}, "Faults"),
      faultForm(catalog),
      el("h3", {}, "Rules"),
      table(["id", "server", "stage", "action", "rule", "matched", "fired", ""], stats.rules.map((r) =>
        el("tr", { "data-rule": r.key }, el("td", {}, r.key), el("td", {}, r.server), el("td", {}, r.on),
          el("td", {}, r.action), el("td", {}, el("code", {}, JSON.stringify(r))), el("td", {}, r.matches),
          el("td", { class: "fired" }, r.fired),
          el("td", {}, r.key.startsWith("runtime:") ? el("button", { class: "danger", onclick: async () => {
            await api(`/faults/${encodeURIComponent(r.key)}`, { method: "DELETE" }); redraw(); } }, "remove") : "")))),
      el("h3", {}, "Timeline of fired faults"),
      table(["time", "server", "conn", "stage", "action", "rule"], fired.events.filter((e) => e.fired).reverse()
        .map((e) => el("tr", { class: "fault-fired" }, el("td", {}, time(e.t)), el("td", {}, e.server),
          el("td", {}, e.conn), el("td", {}, e.on), el("td", {}, e.action), el("td", {}, e.rule)))),
    );
  },
};

function card(label, value) {
  return el("div", { class: "card" }, el("b", {}, value), label);
}

async function serversOf(protocol) {
  const info = await api("/info");
  const names = new Set(info.listeners.filter((l) => l.protocol === protocol).map((l) => l.server));
  return [...names];
}

async function drawMessage(pane, base, uid) {
  const msg = await api(`${base}/messages/${uid}`);
  const tabs = ["html", "text", "headers", "raw", "attachments"];
  const current = state.mail.tab && tabs.includes(state.mail.tab) ? state.mail.tab : (msg.html ? "html" : "text");
  let body;
  if (current === "html") {
    // The message's HTML runs nowhere: a sandboxed frame with no scripts, no same-origin access.
    body = el("iframe", { class: "mail", sandbox: "", id: "mail-html" });
    body.srcdoc = msg.html || "<p>(no HTML part)</p>";
  } else if (current === "text") body = el("pre", { id: "mail-text" }, msg.text || "(no text part)");
  else if (current === "headers") body = table(["name", "value"], msg.headers.map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, v))));
  else if (current === "raw") body = el("pre", {}, msg.raw);
  else body = table(["part", "file", "type", "size"], msg.attachments.map((a) =>
    el("tr", {}, el("td", {}, a.part), el("td", {}, el("a", { href: `${API}${base}/messages/${uid}/parts/${a.part}`,
      download: a.filename || `part-${a.part}` }, a.filename || "(unnamed)")), el("td", {}, a.content_type),
    el("td", {}, a.size))));
  pane.replaceChildren(
    el("h3", {}, msg.subject || "(no subject)"),
    el("p", { class: "muted" }, `From ${msg.from || "?"} to ${msg.to || "?"} · ${msg.size} bytes`),
    el("div", { class: "tabs" }, tabs.map((t) => el("button", { class: t === current ? "active" : "",
      onclick: () => { state.mail.tab = t; redraw(); } }, t)),
    " ", el("button", { class: "danger", onclick: async () => {
      await api(`${base}/messages/${uid}`, { method: "DELETE" }); state.mail.uid = null; redraw(); } }, "delete")),
    body);
}

async function drawConversation(pane, server, conn) {
  let events;
  try { events = (await api(`/connections/${server}/${conn}`)).events; }
  catch (e) { pane.replaceChildren(el("p", { class: "muted" }, e.message)); return; }
  const start = events[0].t;
  pane.replaceChildren(
    el("h3", {}, `${server} connection ${conn}`),
    table(["after", "event", "detail"], events.map((e) => {
      let what = e.kind, detail, cls = "";
      if (e.kind === "data") {
        what = e.direction === "up" ? "→ bytes" : "← bytes";
        cls = e.direction === "up" ? "dir-up" : "dir-down";
        detail = el("pre", {}, typeof e.payload === "string" ? e.payload : JSON.stringify(e.payload ?? `${e.size} bytes`));
      } else if (e.kind === "fault") {
        cls = e.fired ? "fault-fired" : "fault-held";
        what = e.fired ? "fault fired" : "fault held";
        detail = el("span", {}, `${e.action} at ${e.on} by rule ${e.rule}`,
          e.fired ? "" : ` (probability draw ${e.draw})`, e.detail ? el("code", {}, " " + JSON.stringify(e.detail)) : "");
      } else {
        const rest = { ...e };
        for (const key of ["seq", "t", "kind", "server", "conn"]) delete rest[key];
        detail = el("code", {}, JSON.stringify(rest));
      }
      return el("tr", { class: cls + " event-" + e.kind.replace(".", "-") },
        el("td", {}, `+${((e.t - start) * 1000).toFixed(1)} ms`),
        el("td", {}, what), el("td", {}, detail));
    })));
}

function faultForm(catalog) {
  const servers = Object.entries(catalog.servers);
  const form = el("form", { class: "fault", id: "fault-form" });
  const server = el("select", { name: "server" }, servers.map(([name]) => el("option", { value: name }, name)));
  const stage = el("select", { name: "on" });
  const action = el("select", { name: "action" });
  const params = el("div", { class: "wide", id: "fault-params" });
  const times = el("input", { name: "times", type: "number", min: 0, placeholder: "every time" });
  const after = el("input", { name: "after", type: "number", min: 0, placeholder: "0" });
  const probability = el("input", { name: "probability", type: "number", min: 0, max: 1, step: "0.01", placeholder: "1" });
  const match = el("input", { name: "match", placeholder: "attribute=glob, ..." });
  const error = el("div", { class: "error wide", id: "fault-error" });
  const surface = () => catalog.protocols[catalog.servers[server.value]];
  const fillStages = () => {
    const s = surface();
    stage.replaceChildren(...Object.keys(s.stages).map((name) =>
      el("option", { value: name, selected: name === s.default_stage }, name)));
    fillActions();
  };
  const fillActions = () => {
    const allowed = surface().stages[stage.value].actions;
    action.replaceChildren(...allowed.map((name) => el("option", { value: name }, name)));
    fillParams();
  };
  const fillParams = () => {
    const spec = surface().actions[action.value] || { params: {} };
    params.replaceChildren(...Object.entries(spec.params).map(([key, type]) => el("label", {}, key + " (" +
      (Array.isArray(type) ? type.join(" | ") : type) + ")", el("input", { name: "param:" + key, "data-type": Array.isArray(type) ? "choice" : type }))));
  };
  server.addEventListener("change", fillStages);
  stage.addEventListener("change", fillActions);
  action.addEventListener("change", fillParams);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const rule = { server: server.value, on: stage.value, action: action.value };
    if (times.value !== "") rule.times = Number(times.value);
    if (after.value !== "") rule.after = Number(after.value);
    if (probability.value !== "") rule.probability = Number(probability.value);
    if (match.value.trim()) rule.match = Object.fromEntries(match.value.split(",").map((pair) =>
      pair.split("=").map((s) => s.trim())));
    for (const input of params.querySelectorAll("input")) {
      if (input.value === "") continue;
      const type = input.dataset.type;
      rule[input.name.slice(6)] = type === "int" || type === "float" ? Number(input.value)
        : type === "bool" ? input.value === "true" : type === "dict" || type === "object" ? parseJSON(input.value)
        : input.value;
    }
    try { await api("/faults", { method: "POST", body: JSON.stringify(rule) }); error.textContent = ""; redraw(); }
    catch (e) { error.textContent = e.message; }
  });
  form.append(
    el("label", {}, "server", server), el("label", {}, "stage", stage), el("label", {}, "action", action),
    el("label", {}, "times", times), el("label", {}, "after", after), el("label", {}, "probability", probability),
    el("label", { class: "wide" }, "match", match), params,
    el("div", { class: "wide" }, el("button", { type: "submit", id: "fault-add" }, "add fault")), error);
  fillStages();
  return form;
}

function parseJSON(text) {
  try { return JSON.parse(text); } catch (e) { return text; }
}

// -- drawing and live updates ---------------------------------------------------------------

async function redraw() {
  // One drawing at a time; events that arrive meanwhile ask for one more afterwards.
  if (state.drawing) { state.dirty = true; return; }
  state.drawing = true;
  try {
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === state.view);
    if (state.view !== "faults" || !document.getElementById("fault-form")) await views[state.view]();
    else await refreshFaultTables();
    document.body.dataset.drawn = String(Date.now());
  } catch (e) {
    show(el("h2", {}, state.view), el("p", { class: "error" }, e.message));
  } finally {
    state.drawing = false;
    if (state.dirty) { state.dirty = false; setTimeout(redraw, 100); }
  }
}

async function refreshFaultTables() {
  // Keep the form (and what is typed in it); redraw the rest.
  const form = document.getElementById("fault-form");
  await views.faults();
  document.getElementById("fault-form").replaceWith(form);
}

function route() {
  const name = location.hash.slice(1);
  state.view = views[name] ? name : "overview";
  const form = document.getElementById("fault-form");
  if (form && state.view !== "faults") form.remove();
  document.getElementById("view").replaceChildren();
  redraw();
}

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource(API + "/events?kind=connection.open,connection.close,stored,fault,command");
  let pending = null;
  source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  source.onmessage = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; redraw(); }, 200);
  };
}

window.addEventListener("hashchange", route);
route();
listen();
