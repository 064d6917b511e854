// The Sluice console: plain JavaScript, no build step, no inline script (the page is served
// with a strict Content-Security-Policy). Every value is put on the page as text
// (textContent, never innerHTML), so a connector named <img onerror=…> shows as text.
// The API token lives in sessionStorage and travels in an Authorization header (and, for
// the realtime socket, as a subprotocol), never in a URL.
"use strict";

(function () {
  const TOKEN_KEY = "sluice.token";
  const TAIL_ROWS = 200; // rows kept in a live tail
  const REFRESH_MS = 2000;

  // ---- small helpers -------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function headers(extra) {
    const out = Object.assign({}, extra || {});
    if (token()) out["Authorization"] = "Bearer " + token();
    return out;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      notice("The server cannot be reached: " + err.message, true);
      throw err;
    }
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) data = await response.json();
    if (response.status === 401) notice("The server asks for an API token: enter it above.", true);
    return { status: response.status, ok: response.ok, data };
  }

  function notice(text, bad) {
    const el = document.getElementById("notice");
    el.textContent = text || "";
    el.hidden = !text;
    el.classList.toggle("bad", !!bad);
  }

  function b64url(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fmtNumber(n) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString("en-US");
  }

  function fmtAge(iso) {
    if (!iso) return "–";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 1) return "now";
    if (seconds < 120) return seconds.toFixed(0) + " s";
    if (seconds < 7200) return (seconds / 60).toFixed(0) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function statusCell(word) {
    return h("span", { class: "status status-" + word, text: word });
  }

  function table(columns, rows) {
    return h(
      "table",
      {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "", text: c.label })))),
      h(
        "tbody",
        {},
        rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : c.wrap ? "wrap" : "" }, c.value(row)))))
      )
    );
  }

  // ---- router --------------------------------------------------------------------------

  let cleanup = null;

  function route() {
    if (cleanup) cleanup();
    cleanup = null;
    notice("");
    const parts = (location.hash.replace(/^#\/?/, "") || "connectors").split("/");
    const view = document.getElementById("view");
    view.replaceChildren();
    for (const link of document.querySelectorAll("nav a[data-nav]")) {
      link.classList.toggle("active", link.dataset.nav === parts[0]);
    }
    if (parts[0] === "connectors" && parts[1] === "new") cleanup = connectorForm(view, null);
    else if (parts[0] === "connectors" && parts[2] === "edit") cleanup = connectorForm(view, decodeURIComponent(parts[1]));
    else if (parts[0] === "connectors" && parts[1]) cleanup = connectorDetail(view, decodeURIComponent(parts[1]));
    else if (parts[0] === "data") cleanup = dataPage(view);
    else if (parts[0] === "system") cleanup = systemPage(view);
    else cleanup = connectorsPage(view);
  }

  function every(ms, fn) {
    let stopped = false;
    let timer = null;
    async function tick() {
      if (stopped) return;
      try {
        await fn();
      } catch (err) {
        console.error(err);
      }
      if (!stopped) timer = setTimeout(tick, ms);
    }
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  // ---- connectors ----------------------------------------------------------------------

  function connectorsPage(view) {
    const body = h("tbody");
    const count = h("span", { class: "muted" });
    view.append(
      h("div", { class: "toolbar" }, h("h1", { text: "Connectors" }), count, h("a", { class: "button primary", href: "#/connectors/new", text: "New connector" })),
      h(
        "table",
        { id: "connectors" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Source", "Status", "msg/s", "Records stored", "Gaps", "Errors", "Last message", ""].map((t, i) =>
              h("th", { class: i >= 3 && i <= 6 ? "num" : "", text: t })
            )
          )
        ),
        body
      )
    );
    const rows = new Map(); // connector_id -> {tr, cells, last: {received, at}}

    function rowFor(c) {
      let row = rows.get(c.connector_id);
      if (row) return row;
      const cells = {};
      for (const key of ["name", "source", "status", "rate", "stored", "gaps", "errors", "age"]) {
        cells[key] = h("td", { class: ["rate", "stored", "gaps", "errors"].includes(key) ? "num" : "" });
      }
      const id = c.connector_id;
      const actions = h(
        "td",
        {},
        h("button", { class: "start", onclick: () => act(id, "start"), text: "Start" }),
        " ",
        h("button", { class: "stop", onclick: () => act(id, "stop"), text: "Stop" }),
        " ",
        h("a", { class: "button", href: "#/connectors/" + encodeURIComponent(id) + "/edit", text: "Edit" }),
        " ",
        h("button", { class: "danger", onclick: () => remove(id), text: "Delete" })
      );
      const tr = h("tr", { "data-id": id }, Object.values(cells), actions);
      row = { tr, cells, last: null };
      rows.set(id, row);
      return row;
    }

    function set(cell, value) {
      if (cell.textContent !== value) cell.textContent = value; // touch the DOM only on change
    }

    async function act(id, action) {
      const r = await api("POST", "/api/connectors/" + encodeURIComponent(id) + "/" + action);
      if (!r.ok) notice(action + " failed: " + ((r.data && r.data.detail) || r.status), true);
      await refresh();
    }

    async function remove(id) {
      if (!confirm("Delete this connector?")) return;
      const r = await api("DELETE", "/api/connectors/" + encodeURIComponent(id));
      if (r.status !== 204) notice("delete failed: " + r.status, true);
      await refresh();
    }

    async function refresh() {
      const [list, statuses] = await Promise.all([api("GET", "/api/connectors"), api("GET", "/api/connectors/statuses")]);
      if (!list.ok) return;
      const byId = new Map(((statuses.ok && statuses.data.data) || []).map((s) => [s.connector_id, s]));
      const now = Date.now();
      const seen = new Set();
      let previous = null;
      for (const c of list.data.data) {
        seen.add(c.connector_id);
        const row = rowFor(c);
        const s = byId.get(c.connector_id) || { status: c.status };
        const link = row.cells.name.firstChild;
        if (!link) {
          row.cells.name.append(h("a", { href: "#/connectors/" + encodeURIComponent(c.connector_id), text: c.name }));
        } else if (link.textContent !== c.name) link.textContent = c.name;
        set(row.cells.source, c.protocol + " · " + c.exchange);
        const word = s.status || "inactive";
        if (row.cells.status.textContent !== word) row.cells.status.replaceChildren(statusCell(word));
        const received = s.messages_received || 0;
        if (row.last && now > row.last.at) {
          const rate = Math.max(0, (received - row.last.received) / ((now - row.last.at) / 1000));
          set(row.cells.rate, rate.toFixed(rate < 10 ? 1 : 0));
        } else set(row.cells.rate, "–");
        row.last = { received, at: now };
        set(row.cells.stored, fmtNumber(s.records_stored));
        set(row.cells.gaps, fmtNumber(s.messages_gap));
        set(row.cells.errors, fmtNumber(s.errors));
        set(row.cells.age, fmtAge(s.last_message_at));
        // Keep the server's order; move a row only if it is out of place.
        const expected = previous ? previous.nextSibling : body.firstChild;
        if (expected !== row.tr) body.insertBefore(row.tr, expected);
        previous = row.tr;
      }
      for (const [id, row] of rows) {
        if (!seen.has(id)) {
          row.tr.remove();
          rows.delete(id);
        }
      }
      count.textContent = list.data.count + " connector" + (list.data.count === 1 ? "" : "s");
    }

    return every(REFRESH_MS, refresh);
  }

  // ---- the create / edit form ----------------------------------------------------------

  const SECRETS = ["api_key", "api_secret", "passphrase", "bearer_token", "username", "password"];
  const JSON_FIELDS = ["headers", "query_params", "auth_options", "request_body", "subscribe_messages", "field_mapping"];
  const NUMBER_FIELDS = ["polling_interval", "ping_interval", "pong_timeout", "stale_timeout", "app_ping_interval", "retention_days"];
  const FIELDS = [
    { name: "name", label: "Name", hint: "required" },
    { name: "api_url", label: "URL", hint: "ws(s):// streams, http(s):// polls", wide: true },
    { name: "exchange", label: "Exchange", hint: "empty: from the host (okx, binance, …, else custom)" },
    { name: "http_method", label: "HTTP method", options: ["GET", "POST", "PUT", "PATCH", "DELETE"] },
    { name: "polling_interval", label: "Polling interval (ms)", hint: "REST sources" },
    { name: "auth_type", label: "Authentication", options: ["None", "API_KEY", "BEARER", "BASIC", "HMAC"] },
    { name: "hmac_preset", label: "HMAC preset", options: ["", "binance", "okx", "generic"], hint: "sets auth_options.preset" },
    { name: "api_key", label: "API key", secret: true },
    { name: "api_secret", label: "API secret", secret: true },
    { name: "passphrase", label: "Passphrase", secret: true },
    { name: "bearer_token", label: "Bearer token", secret: true },
    { name: "username", label: "Username", secret: true },
    { name: "password", label: "Password", secret: true },
    { name: "auth_options", label: "Auth options (JSON)", json: true },
    { name: "headers", label: "Headers (JSON object)", json: true },
    { name: "query_params", label: "Query parameters (JSON object)", json: true },
    { name: "secret_headers", label: "Secret header names (JSON list)", json: true, hint: "shown as ****, like credentials" },
    { name: "secret_query_params", label: "Secret query parameter names (JSON list)", json: true },
    { name: "request_body", label: "Request body (JSON)", json: true },
    { name: "subscribe_messages", label: "Subscribe messages (JSON array)", json: true, wide: true },
    { name: "field_mapping", label: "Field mapping (JSON)", json: true, wide: true },
    { name: "ping_interval", label: "Ping interval (s)" },
    { name: "pong_timeout", label: "Pong timeout (s)" },
    { name: "stale_timeout", label: "Stale timeout (s)" },
    { name: "app_ping", label: "Application ping text" },
    { name: "app_ping_interval", label: "Application ping interval (s)" },
    { name: "retention_days", label: "Retention (days)" },
  ];

  function connectorForm(view, connectorId) {
    const inputs = {};
    const errors = {};
    const wrappers = {};
    const formError = h("p", { class: "error", id: "form-error" });
    const grid = h("div", { class: "grid" });
    for (const f of FIELDS) {
      let input;
      if (f.options) input = h("select", { name: f.name, id: "f-" + f.name }, f.options.map((o) => h("option", { value: o, text: o || "(none)" })));
      else if (f.json) input = h("textarea", { name: f.name, id: "f-" + f.name, spellcheck: "false" });
      else input = h("input", { name: f.name, id: "f-" + f.name, type: f.secret ? "password" : "text", autocomplete: "off" });
      inputs[f.name] = input;
      errors[f.name] = h("span", { class: "error", "data-error-for": f.name });
      wrappers[f.name] = h(
        "div",
        { class: "field" + (f.wide ? " wide" : ""), "data-field": f.name },
        h("label", { for: "f-" + f.name, text: f.label }),
        input,
        f.hint ? h("span", { class: "hint", text: f.hint }) : null,
        errors[f.name]
      );
      grid.append(wrappers[f.name]);
    }
    const previewIn = h("textarea", { id: "preview-message", placeholder: "Paste one message as the source sends it" });
    const previewOut = h("pre", { id: "preview-result" });
    const save = h("button", { class: "primary", type: "submit", text: connectorId ? "Save" : "Create" });
    const form = h(
      "form",
      { id: "connector-form", novalidate: true, onsubmit: submit },
      h("div", { class: "panel" }, grid),
      formError,
      h("div", { class: "toolbar" }, save, h("a", { class: "button", href: connectorId ? "#/connectors/" + encodeURIComponent(connectorId) : "#/connectors", text: "Cancel" }))
    );
    view.append(
      h("h1", { text: connectorId ? "Edit connector" : "New connector" }),
      form,
      h(
        "div",
        { class: "panel" },
        h("h2", { text: "Preview" }),
        h("p", { class: "muted", text: "Runs a pasted message through the normalizer this form describes, without storing it." }),
        previewIn,
        h("div", { class: "toolbar" }, h("button", { type: "button", id: "preview", onclick: preview, text: "Preview" })),
        previewOut
      )
    );
    let loaded = null;
    if (connectorId) {
      api("GET", "/api/connectors/" + encodeURIComponent(connectorId)).then((r) => {
        if (!r.ok) return notice("connector not found", true);
        loaded = r.data;
        for (const f of FIELDS) {
          const value = loaded[f.name];
          if (f.name === "hmac_preset") inputs[f.name].value = (loaded.auth_options && loaded.auth_options.preset) || "";
          else if (f.secret) inputs[f.name].placeholder = value ? "set (write-only): type to replace" : "not set";
          else if (f.json) inputs[f.name].value = value === null || value === undefined ? "" : JSON.stringify(value, null, 1);
          else if (value !== null && value !== undefined) inputs[f.name].value = String(value);
        }
      });
    } else {
      inputs.auth_type.value = "None";
      inputs.http_method.value = "GET";
    }

    function clearErrors() {
      formError.textContent = "";
      for (const name of Object.keys(errors)) {
        errors[name].textContent = "";
        wrappers[name].classList.remove("invalid");
      }
    }

    function showError(field, message) {
      if (errors[field]) {
        errors[field].textContent = message;
        wrappers[field].classList.add("invalid");
      } else formError.textContent = (formError.textContent ? formError.textContent + " " : "") + (field ? field + ": " : "") + message;
    }

    function collect() {
      const body = {};
      let bad = false;
      for (const f of FIELDS) {
        if (f.name === "hmac_preset") continue;
        const raw = inputs[f.name].value;
        if (f.secret) {
          if (raw !== "") body[f.name] = raw; // write-only: empty keeps the stored value
          continue;
        }
        if (raw.trim() === "") {
          if (loaded && loaded[f.name] !== null && loaded[f.name] !== undefined && f.json) body[f.name] = null;
          continue;
        }
        if (f.json) {
          try {
            body[f.name] = JSON.parse(raw);
          } catch (err) {
            showError(f.name, "not valid JSON: " + err.message);
            bad = true;
          }
        } else if (NUMBER_FIELDS.includes(f.name) && /^-?\d+(\.\d+)?$/.test(raw.trim())) body[f.name] = Number(raw);
        else body[f.name] = raw;
      }
      const preset = inputs.hmac_preset.value;
      if (preset) body.auth_options = Object.assign({}, body.auth_options || {}, { preset });
      return bad ? null : body;
    }

    async function submit(event) {
      event.preventDefault();
      clearErrors();
      const body = collect();
      if (!body) return;
      save.disabled = true;
      try {
        const r = connectorId
          ? await api("PUT", "/api/connectors/" + encodeURIComponent(connectorId), body)
          : await api("POST", "/api/connectors", body);
        if (r.ok) {
          location.hash = "#/connectors/" + encodeURIComponent(r.data.connector_id);
          return;
        }
        const detail = r.data && r.data.detail;
        if (Array.isArray(detail)) {
          for (const item of detail) {
            const loc = (item.loc || []).filter((p) => p !== "body");
            showError(loc.length ? String(loc[0]) : "", item.msg + (loc.length > 1 ? " (" + loc.slice(1).join(".") + ")" : ""));
          }
        } else showError("", String(detail || "HTTP " + r.status));
      } finally {
        save.disabled = false;
      }
    }

    async function preview() {
      const raw = previewIn.value;
      let message;
      try {
        message = JSON.parse(raw);
      } catch (err) {
        message = raw; // the frame's text, as the source sent it
      }
      const body = { message };
      const formBody = collect() || {};
      if (formBody.exchange) body.exchange = formBody.exchange;
      else if (connectorId) body.connector_id = connectorId;
      if (formBody.field_mapping) body.field_mapping = formBody.field_mapping;
      const r = await api("POST", "/api/normalize/preview", body);
      previewOut.textContent = JSON.stringify(r.data, null, 2);
    }

    return null;
  }

  // ---- connector detail ----------------------------------------------------------------

  function connectorDetail(view, id) {
    const path = "/api/connectors/" + encodeURIComponent(id);
    const title = h("h1", { text: id });
    const cards = h("div", { class: "cards", id: "cards" });
    const accounting = h("dl", { class: "kv" });
    const gaps = h("div");
    const errs = h("div");
    const dead = h("div");
    const stops = [];
    const chartHolder = h("div", { id: "chart" });
    const chartSelect = h("select", { id: "chart-instrument" });

    async function act(action) {
      const r = await api("POST", path + "/" + action);
      if (!r.ok) notice(action + ": " + ((r.data && r.data.detail) || r.status), true);
    }

    view.append(
      h(
        "div",
        { class: "toolbar" },
        title,
        h("button", { onclick: () => act("start"), text: "Start", id: "start" }),
        h("button", { onclick: () => act("stop"), text: "Stop", id: "stop" }),
        h("a", { class: "button", href: "#/connectors/" + encodeURIComponent(id) + "/edit", text: "Edit" })
      ),
      cards,
      h(
        "div",
        { class: "split" },
        h("div", { class: "panel" }, h("h2", { text: "Accounting" }), accounting),
        h("div", { class: "panel" }, h("h2", { text: "Price" }), h("div", { class: "toolbar" }, h("span", { class: "muted", text: "instrument" }), chartSelect), chartHolder)
      ),
      tailPanel(id, stops, chartHolder, chartSelect),
      h("div", { class: "split" }, h("div", { class: "panel" }, h("h2", { text: "Gaps" }), gaps), h("div", { class: "panel" }, h("h2", { text: "Errors" }), errs)),
      h("div", { class: "panel" }, h("h2", { text: "Dead letters" }), dead)
    );

    function card(label, value, cls) {
      return h("div", { class: "card" }, h("div", { class: "value " + (cls || ""), text: value }), h("div", { class: "label", text: label }));
    }

    let last = null;
    stops.push(
      every(REFRESH_MS, async () => {
        const [c, s] = await Promise.all([api("GET", path), api("GET", path + "/status")]);
        if (!c.ok) return notice("connector " + id + " not found", true);
        title.textContent = c.data.name;
        const st = s.ok ? s.data : { status: c.data.status };
        const now = Date.now();
        let rate = "–";
        if (last) rate = ((st.messages_received - last.received) / ((now - last.at) / 1000)).toFixed(1);
        last = { received: st.messages_received || 0, at: now };
        cards.replaceChildren(
          card("status", st.status, "status-" + st.status),
          card("messages/s", rate),
          card("received", fmtNumber(st.messages_received)),
          card("records stored", fmtNumber(st.records_stored)),
          card("rejected", fmtNumber(st.messages_rejected)),
          card("gap messages", fmtNumber(st.messages_gap)),
          card("errors", fmtNumber(st.errors)),
          card("last message", fmtAge(st.last_message_at))
        );
        accounting.replaceChildren(
          ...Object.entries(Object.assign({ protocol: c.data.protocol, exchange: c.data.exchange, url: c.data.api_url, last_error: st.last_error || "–" }, st.accounting || {})).flatMap(([k, v]) => [
            h("dt", { text: k }),
            h("dd", { text: typeof v === "number" ? fmtNumber(v) : String(v) }),
          ])
        );
      })
    );
    stops.push(
      every(5000, async () => {
        const [g, e, d] = await Promise.all([api("GET", path + "/gaps?limit=20"), api("GET", path + "/errors?limit=20"), api("GET", path + "/rejected?limit=20")]);
        if (g.ok)
          gaps.replaceChildren(
            table(
              [
                { label: "from", value: (r) => r.gap_from },
                { label: "to", value: (r) => r.gap_to },
                { label: "cause", value: (r) => r.cause },
                { label: "lost", num: true, value: (r) => fmtNumber(r.messages_lost) },
              ],
              g.data.data
            )
          );
        if (e.ok)
          errs.replaceChildren(
            table(
              [
                { label: "at", value: (r) => r.occurred_at },
                { label: "kind", value: (r) => r.kind },
                { label: "message", wrap: true, value: (r) => r.message },
              ],
              e.data.data
            )
          );
        if (d.ok)
          dead.replaceChildren(
            table(
              [
                { label: "at", value: (r) => r.received_at || r.rejected_at || "" },
                { label: "category", value: (r) => r.category },
                { label: "reason", wrap: true, value: (r) => r.reason },
                { label: "raw", wrap: true, value: (r) => String(r.raw || "").slice(0, 300) },
              ],
              d.data.data
            )
          );
      })
    );
    return () => stops.forEach((stop) => stop());
  }

  // A live tail of one connector's records and its price chart. The realtime socket lives
  // in a worker (tail-worker.js) that parses the feed and posts what changed five times a
  // second, so a 30,000 msg/s feed never takes the page's main thread; the page keeps at
  // most TAIL_ROWS rows and redraws the chart (uPlot) with the worker's bucketed series.
  function tailPanel(id, stops, chartHolder, chartSelect) {
    const body = h("tbody", { id: "tail-rows" });
    const pauseButton = h("button", { id: "pause", text: "Pause" });
    const counter = h("span", { class: "muted", id: "tail-count", text: "0 records" });
    const skips = h("span", { class: "muted", id: "tail-skips", hidden: true });
    const worker = new Worker("/console/tail-worker.js");
    let paused = false;
    const filter = { instrument: "", type: "" };
    pauseButton.addEventListener("click", () => {
      paused = !paused;
      pauseButton.textContent = paused ? "Resume" : "Pause";
      worker.postMessage({ paused });
    });
    const instrument = h("input", {
      placeholder: "instrument",
      id: "tail-instrument",
      oninput: (e) => worker.postMessage({ filter: Object.assign(filter, { instrument: e.target.value.trim() }) }),
    });
    const type = h("input", {
      placeholder: "type",
      id: "tail-type",
      oninput: (e) => worker.postMessage({ filter: Object.assign(filter, { type: e.target.value.trim() }) }),
    });
    chartSelect.addEventListener("change", () => worker.postMessage({ chosen: chartSelect.value }));
    let chart = null;

    function rows(records) {
      const fragment = document.createDocumentFragment();
      for (let i = records.length - 1; i >= 0; i--) {
        const r = records[i];
        fragment.append(
          h(
            "tr",
            {},
            h("td", { class: "num", text: r.id }),
            h("td", { text: r.timestamp }),
            h("td", { text: r.instrument || "" }),
            h("td", { text: r.message_type }),
            h("td", { class: "num", text: r.price === null ? "" : String(r.price) }),
            h("td", { class: "num", text: r.size === null ? "" : String(r.size) }),
            h("td", { text: r.side || "" })
          )
        );
      }
      body.prepend(fragment);
      while (body.childElementCount > TAIL_ROWS) body.lastElementChild.remove();
    }

    function draw(data) {
      if (typeof uPlot === "undefined") return;
      if (chart) return chart.setData(data);
      chart = new uPlot(
        {
          width: Math.max(300, chartHolder.clientWidth || 500),
          height: 260,
          scales: { x: { time: true } },
          axes: [{}, { size: 80 }], // room for prices such as 43,210.5
          series: [
            {},
            { label: "trade", stroke: "#1f6feb", width: 0, points: { show: true, size: 4, fill: "#1f6feb" } },
            { label: "bid", stroke: "#1a7f37", width: 1, spanGaps: true, points: { show: false } },
            { label: "ask", stroke: "#cf222e", width: 1, spanGaps: true, points: { show: false } },
          ],
        },
        data,
        chartHolder
      );
    }

    worker.onmessage = (event) => {
      const m = event.data;
      if (m.closed !== undefined) {
        if (m.closed !== 1000 && m.closed !== 1001) notice("The live tail closed (" + m.closed + "); reload to reconnect.", true);
        return;
      }
      if (m.skipped !== undefined) {
        skips.textContent = "fell behind, skipped ahead " + m.skipped + (m.skipped === 1 ? " time" : " times");
        skips.hidden = false;
        return;
      }
      counter.textContent = fmtNumber(m.received) + " records";
      if (m.rows) rows(m.rows);
      if (m.instruments) {
        for (const name of m.instruments.slice(chartSelect.options.length)) chartSelect.append(h("option", { value: name, text: name }));
        if (!chartSelect.value) chartSelect.value = m.chosen;
      }
      if (m.chart) draw(m.chart);
    };
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = token() ? ["sluice", "bearer." + b64url(token())] : ["sluice"];
    const query = "connector_id=" + encodeURIComponent(id) + "&batch=true&numbers=string";
    worker.postMessage({ open: { url: scheme + "//" + location.host + "/api/realtime?" + query, protocols } });
    stops.push(() => {
      worker.terminate();
      if (chart) chart.destroy();
    });
    return h(
      "div",
      { class: "panel" },
      h("div", { class: "toolbar" }, h("h2", { text: "Live tail" }), pauseButton, instrument, type, counter, skips),
      h(
        "div",
        { class: "tail" },
        h(
          "table",
          { id: "tail" },
          h("thead", {}, h("tr", {}, ["id", "time", "instrument", "type", "price", "size", "side"].map((t) => h("th", { text: t })))),
          body
        )
      )
    );
  }

  // ---- stored data ---------------------------------------------------------------------

  function dataPage(view) {
    const filters = {
      exchange: h("input", { id: "d-exchange", placeholder: "exchange" }),
      instrument: h("input", { id: "d-instrument", placeholder: "instrument" }),
      connector_id: h("input", { id: "d-connector", placeholder: "connector id" }),
      from: h("input", { id: "d-from", placeholder: "from (ISO time)" }),
      to: h("input", { id: "d-to", placeholder: "to (ISO time)" }),
      sort_by: h("select", { id: "d-sort" }, ["id", "timestamp", "received_at", "price", "size", "instrument"].map((o) => h("option", { value: o, text: "sort: " + o }))),
      sort_order: h("select", { id: "d-order" }, h("option", { value: "-1", text: "newest first" }), h("option", { value: "1", text: "oldest first" })),
      limit: h("select", { id: "d-limit" }, ["50", "100", "500", "1000"].map((o) => h("option", { value: o, text: o + " rows" }))),
    };
    filters.limit.value = "100";
    const results = h("div", { id: "data-results" });
    const info = h("span", { class: "muted", id: "data-info" });
    const more = h("button", { id: "data-next", text: "Next page", disabled: true });
    const csv = h("button", { id: "data-csv", text: "Download CSV" });
    let after = null;

    function query(withAfter) {
      const params = new URLSearchParams();
      for (const [key, input] of Object.entries(filters)) if (input.value.trim()) params.set(key, input.value.trim());
      params.set("numbers", "string");
      if (withAfter && after !== null) params.set("after_id", String(after));
      return params;
    }

    async function load(next) {
      if (!next) after = null;
      const r = await api("GET", "/api/websocket/data?" + query(next).toString());
      if (!r.ok) {
        const detail = r.data && r.data.detail;
        info.textContent = Array.isArray(detail) ? detail.map((d) => d.loc.slice(1).join(".") + ": " + d.msg).join("; ") : String(detail || r.status);
        return;
      }
      after = r.data.next_after_id;
      more.disabled = after === null || after === undefined;
      info.textContent = r.data.count + " rows" + (filters.sort_by.value === "id" ? "" : " (keyset paging needs sort: id)");
      results.replaceChildren(
        table(
          [
            { label: "id", num: true, value: (r) => r.id },
            { label: "time", value: (r) => r.timestamp },
            { label: "exchange", value: (r) => r.exchange },
            { label: "instrument", value: (r) => r.instrument || "" },
            { label: "type", value: (r) => r.message_type },
            { label: "price", num: true, value: (r) => r.price || "" },
            { label: "size", num: true, value: (r) => r.size || "" },
            { label: "side", value: (r) => r.side || "" },
            { label: "connector", value: (r) => r.connector_id || "" },
          ],
          r.data.data
        )
      );
    }

    async function download() {
      const url = "/api/websocket/data.csv?" + query(false).toString();
      if (!token()) {
        // No header to send: the browser streams the file straight to disk.
        const a = h("a", { href: url, download: "sluice-records.csv" });
        document.body.append(a);
        a.click();
        a.remove();
        return;
      }
      const response = await fetch(url, { headers: headers() });
      const blob = await response.blob();
      const a = h("a", { href: URL.createObjectURL(blob), download: "sluice-records.csv" });
      document.body.append(a);
      a.click();
      a.remove();
    }

    more.addEventListener("click", () => load(true));
    csv.addEventListener("click", download);
    filters.sort_by.value = "id";
    view.append(
      h("h1", { text: "Stored data" }),
      h(
        "form",
        {
          class: "toolbar",
          id: "data-form",
          onsubmit: (e) => {
            e.preventDefault();
            load(false);
          },
        },
        Object.values(filters),
        h("button", { class: "primary", type: "submit", text: "Search" }),
        more,
        csv,
        info
      ),
      results
    );
    load(false);
    return null;
  }

  // ---- system --------------------------------------------------------------------------

  function systemPage(view) {
    const db = h("div", { id: "sys-db" });
    const pipeline = h("div", { id: "sys-pipeline" });
    const cluster = h("div", { id: "sys-cluster" });
    view.append(
      h("div", { class: "toolbar" }, h("h1", { text: "System" }), h("a", { class: "button", href: "/docs", text: "API docs" }), h("a", { class: "button", href: "/metrics", text: "Metrics" })),
      h("div", { class: "split" }, h("div", { class: "panel" }, h("h2", { text: "PostgreSQL" }), db), h("div", { class: "panel" }, h("h2", { text: "Cluster" }), cluster)),
      h("div", { class: "panel" }, h("h2", { text: "Pipeline" }), pipeline)
    );

    function kv(object) {
      return h(
        "dl",
        { class: "kv" },
        Object.entries(object).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v !== null && typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? fmtNumber(v) : String(v) })])
      );
    }

    return every(REFRESH_MS, async () => {
      const [pg, actors, cl] = await Promise.all([api("GET", "/api/postgres/status"), api("GET", "/api/debug/actors"), api("GET", "/api/cluster")]);
      if (pg.ok) {
        const { tables, ...rest } = pg.data;
        db.replaceChildren(kv(rest), h("h2", { text: "Tables (rows)" }), kv(tables || {}));
      } else db.replaceChildren(h("p", { class: "status-error", text: "unavailable: " + ((pg.data && pg.data.detail) || pg.status) }));
      if (actors.ok) {
        const sections = [];
        for (const [name, value] of Object.entries(actors.data)) {
          if (name === "channels" && value && typeof value === "object") {
            // Backpressure at a glance: how full each pipeline channel is, and who waits.
            sections.push(
              h("h2", { text: "channels" }),
              table(
                [
                  { label: "channel", value: (r) => r[0] },
                  { label: "used / capacity", num: true, value: (r) => r[1].buffer_used + " / " + r[1].capacity },
                  { label: "peak", num: true, value: (r) => r[1].peak },
                  { label: "senders waiting", num: true, value: (r) => r[1].tasks_waiting_send },
                ],
                Object.entries(value)
              )
            );
          } else if (value && typeof value === "object" && !Array.isArray(value)) {
            const flat = {};
            for (const [k, v] of Object.entries(value)) if (v === null || typeof v !== "object" || Array.isArray(v)) flat[k] = v;
            else if (Object.keys(v).length <= 12) flat[k] = v;
            sections.push(h("h2", { text: name }), kv(flat));
          } else sections.push(kv({ [name]: value }));
        }
        pipeline.replaceChildren(...sections);
      }
      if (cl.ok) {
        cluster.replaceChildren(
          table(
            [
              { label: "instance", value: (r) => r.instance_id + (r.self ? " (this)" : "") },
              { label: "live", value: (r) => (r.live ? "yes" : "no") },
              { label: "connectors", num: true, value: (r) => (Array.isArray(r.connectors) ? r.connectors.length : r.connectors) },
              { label: "heartbeat", value: (r) => fmtAge(r.heartbeat_at) },
            ],
            cl.data.instances || []
          )
        );
      }
    });
  }

  // ---- start ---------------------------------------------------------------------------

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token-input");
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    input.placeholder = token() ? "token set (this tab only)" : "API token (if required)";
    route();
  });
  if (token()) document.getElementById("token-input").placeholder = "token set (this tab only)";
  window.addEventListener("hashchange", route);
  route();
})();
