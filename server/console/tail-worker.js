// The live tail's worker: it owns the realtime socket, so parsing a 30,000 msg/s feed never
// competes with the page for its main thread. A tab that cannot keep up is cut off by the
// server with 1008 "lagged" once it is SLUICE_REALTIME_MAX_LAG records behind: a tail is a
// view, not an archive, so the worker then opens a new socket, which starts at the live
// edge, and tells the page how often it skipped ahead. Five times a second
// it posts the page what changed: the newest matching records (at most ROWS), the count,
// the instruments seen, and the chart series of the chosen instrument, one point per
// BUCKET seconds (the last trade, bid and ask in it) over the last CHART_SECONDS.
"use strict";

const ROWS = 200;
const CHART_SECONDS = 300;
const CHART_POINTS = 3000;
const BUCKET = 0.1;
const POST_MS = 200;

let paused = false;
let filter = { instrument: "", type: "" };
let chosen = "";
let received = 0;
let pending = [];
let chartDirty = false;
let instrumentsDirty = false;
const series = new Map();

function num(v) {
  return v === null || v === undefined || v === "" ? null : Number(v);
}

function push(s, t, trade, bid, ask) {
  const bucket = Math.floor(t / BUCKET);
  const last = s.t.length - 1;
  if (last >= 0 && s.bucket === bucket) {
    if (trade !== null) s.trade[last] = trade;
    if (bid !== null) s.bid[last] = bid;
    if (ask !== null) s.ask[last] = ask;
    return;
  }
  s.bucket = bucket;
  s.t.push(t);
  s.trade.push(trade);
  s.bid.push(bid);
  s.ask.push(ask);
  if (s.t.length > CHART_POINTS * 1.5 || t - s.t[0] > CHART_SECONDS * 1.5) {
    const oldest = t - CHART_SECONDS;
    let drop = Math.max(0, s.t.length - CHART_POINTS);
    while (drop < s.t.length && s.t[drop] < oldest) drop++;
    for (const key of ["t", "trade", "bid", "ask"]) s[key].splice(0, drop);
  }
}

function take(records) {
  received += records.length;
  for (const r of records) {
    if (r.instrument) {
      let s = series.get(r.instrument);
      if (!s) {
        s = { t: [], trade: [], bid: [], ask: [], bucket: null };
        series.set(r.instrument, s);
        instrumentsDirty = true;
        if (!chosen) chosen = r.instrument;
      }
      const trade = r.message_type === "trade" ? num(r.price) : null;
      push(s, Date.parse(r.timestamp) / 1000, trade, num(r.bid_price), num(r.ask_price));
      if (r.instrument === chosen) chartDirty = true;
    }
    if (paused) continue;
    if (filter.instrument && r.instrument !== filter.instrument) continue;
    if (filter.type && r.message_type !== filter.type) continue;
    pending.push(r);
  }
  if (pending.length > 2 * ROWS) pending = pending.slice(-ROWS);
}

function post() {
  const out = { received };
  if (pending.length) {
    out.rows = pending.slice(-ROWS);
    pending = [];
  }
  if (instrumentsDirty) {
    out.instruments = [...series.keys()];
    out.chosen = chosen;
    instrumentsDirty = false;
  }
  if (chartDirty) {
    const s = series.get(chosen);
    if (s) out.chart = [s.t.slice(), s.trade.slice(), s.bid.slice(), s.ask.slice()];
    chartDirty = false;
  }
  self.postMessage(out);
}

const SKIP_AHEAD_MS = 500;
let skipped = 0;

function open(url, protocols) {
  const socket = new WebSocket(url, protocols);
  socket.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    if (frame.type === "data_batch") take(frame.records);
    else if (frame.type === "data_update") take([frame]);
  };
  socket.onclose = (e) => {
    if (e.code === 1008 && e.reason === "lagged") {
      skipped += 1;
      self.postMessage({ skipped });
      setTimeout(() => open(url, protocols), SKIP_AHEAD_MS);
    } else {
      self.postMessage({ closed: e.code });
    }
  };
}

self.onmessage = (event) => {
  const m = event.data;
  if (m.open) {
    open(m.open.url, m.open.protocols);
    setInterval(post, POST_MS);
  }
  if ("paused" in m) paused = m.paused;
  if (m.filter) filter = m.filter;
  if (m.chosen) {
    chosen = m.chosen;
    chartDirty = true;
  }
};
