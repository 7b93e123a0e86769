// The camera's history page: fetches history.json and draws the timeline and plots as SVG.
// Everything shown is the server's record (zwo_common/history.py); this script only draws it.
(function () {
  "use strict";
  var root = document.getElementById("hist");
  if (!root) return;
  var base = "/setup/v1/camera/" + root.dataset.number;
  var hours = Number(root.dataset.hours) || 12;
  var data = null;
  var timer = null;
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = { temp: "#3d8bfd", target: "#8f99a8", power: "#e8b339", grid: "#2a313c", label: "#8f99a8",
                 completed: "#4cc38a", stopped: "#3d8bfd", aborted: "#e8b339", failed: "#ff6b6b",
                 up: "#4cc38a", lost: "#ff6b6b", off: "#9b7bff", down: "#3a414d", unknown: "#232a35",
                 error: "#ff6b6b", warn: "#e8b339" };
  var OUTCOMES = ["completed", "stopped", "aborted", "failed"];

  function $(id) { return document.getElementById(id); }
  function svg(tag, attrs, parent) {
    var el = document.createElementNS(NS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) el.setAttribute(k, String(attrs[k]));
    if (parent) parent.appendChild(el);
    return el;
  }
  function time(rec) { return Date.parse(rec.t); }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function hhmm(ms) { var d = new Date(ms); return pad(d.getHours()) + ":" + pad(d.getMinutes()); }
  function hhmmss(ms) { var d = new Date(ms); return hhmm(ms) + ":" + pad(d.getSeconds()); }
  function day(ms) { var d = new Date(ms); return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()); }
  function num(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "?"; }

  // ------------------------------------------------------------------ a plot frame
  // A chart of `height` px over the time span, drawn at the container's pixel width so text stays
  // readable on a phone. Returns {g, x(ms), y(v), w, h} for the series to draw into.
  function frame(box, height, yMin, yMax, yTicks, yFormat, lanes) {
    while (box.firstChild) box.removeChild(box.firstChild);
    var width = Math.max(240, Math.floor(box.clientWidth || 320));
    var left = lanes ? 78 : 44, right = 10, top = 8, bottom = 24;
    var el = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img" }, box);
    var t0 = Date.parse(data.since), t1 = Date.parse(data.now);
    var w = width - left - right, h = height - top - bottom;
    function x(ms) { return left + (ms - t0) / Math.max(1, t1 - t0) * w; }
    function y(v) { return top + h - (v - yMin) / Math.max(1e-9, yMax - yMin) * h; }
    // time axis: a tick every 1, 2, 3, 6 or 12 hours, at whole hours (local time)
    var spanH = (t1 - t0) / 3600000;
    var step = [0.25, 0.5, 1, 2, 3, 6, 12, 24].filter(function (s) { return spanH / s <= Math.max(4, w / 80); })[0] || 24;
    var stepMs = step * 3600000;
    var first = new Date(t0); first.setMinutes(0, 0, 0);
    for (var t = first.getTime(); t <= t1; t += stepMs) {
      if (t < t0) continue;
      svg("line", { x1: x(t), x2: x(t), y1: top, y2: top + h, stroke: COLORS.grid, "stroke-width": 1 }, el);
      var lab = svg("text", { x: x(t), y: height - 6, fill: COLORS.label, "font-size": 12, "text-anchor": "middle" }, el);
      lab.textContent = hhmm(t);
    }
    (yTicks || []).forEach(function (v) {
      svg("line", { x1: left, x2: left + w, y1: y(v), y2: y(v), stroke: COLORS.grid, "stroke-width": 1 }, el);
      var lab = svg("text", { x: left - 6, y: y(v) + 4, fill: COLORS.label, "font-size": 12, "text-anchor": "end" }, el);
      lab.textContent = yFormat ? yFormat(v) : String(v);
    });
    svg("rect", { x: left, y: top, width: w, height: h, fill: "none", stroke: COLORS.grid }, el);
    return { svg: el, x: x, y: y, left: left, top: top, w: w, h: h, t0: t0, t1: t1 };
  }

  function ticks(lo, hi, count) {
    var span = Math.max(1e-9, hi - lo), raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v * 1000) / 1000);
    return out;
  }

  function empty(box, text) {
    while (box.firstChild) box.removeChild(box.firstChild);
    var p = document.createElement("p");
    p.className = "muted small empty";
    p.textContent = text;
    box.appendChild(p);
  }

  // A line through the samples that have `field`, broken where samples are missing (the camera was closed).
  function series(f, samples, field, color, dashed) {
    var gap = Math.max(3 * (data.sample_interval || 10), 60) * 1000;
    var runs = [], run = [], prev = null, points = 0;
    samples.forEach(function (s) {
      var v = s[field];
      if (typeof v !== "number" || !isFinite(v)) return;
      var t = time(s);
      if (prev !== null && t - prev > gap && run.length) { runs.push(run); run = []; }
      run.push(f.x(t).toFixed(1) + "," + f.y(v).toFixed(1));
      prev = t;
      points += 1;
    });
    if (run.length) runs.push(run);
    runs.forEach(function (r) {
      if (r.length === 1) {
        var xy = r[0].split(",");
        svg("circle", { cx: xy[0], cy: xy[1], r: 2.5, fill: color, "class": "pt" }, f.svg);
        return;
      }
      var attrs = { points: r.join(" "), fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round",
                    "class": "line" };
      if (dashed) attrs["stroke-dasharray"] = "6 4";
      svg("polyline", attrs, f.svg);
    });
    return points;
  }

  // ------------------------------------------------------------------ the plots
  function drawTemperature() {
    var box = $("plot-temp");
    var samples = data.samples.filter(function (s) { return typeof s.temp === "number"; });
    if (!samples.length) { empty(box, "No temperature samples in this span (the camera was not connected)."); return; }
    var values = [];
    data.samples.forEach(function (s) {
      if (typeof s.temp === "number") values.push(s.temp);
      if (typeof s.target === "number" && s.cooler) values.push(s.target);
    });
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (hi - lo < 2) { lo -= 1; hi += 1; }
    var pad = (hi - lo) * 0.08;
    var f = frame(box, 180, lo - pad, hi + pad, ticks(lo - pad, hi + pad, 4), function (v) { return v.toFixed(0); });
    var withTarget = data.samples.map(function (s) { return s.cooler ? s : { t: s.t }; });
    series(f, withTarget, "target", COLORS.target, true);
    var n = series(f, data.samples, "temp", COLORS.temp, false);
    f.svg.setAttribute("data-points", String(n));
  }

  function drawPower() {
    var box = $("plot-power");
    var samples = data.samples.filter(function (s) { return typeof s.power === "number"; });
    if (!samples.length) { empty(box, "No cooler power samples in this span."); return; }
    var f = frame(box, 140, 0, 100, [0, 50, 100], function (v) { return v + "%"; });
    var n = series(f, data.samples, "power", COLORS.power, false);
    f.svg.setAttribute("data-points", String(n));
  }

  function drawExposures() {
    var box = $("plot-exp");
    var ended = data.events.filter(function (e) { return e.type === "exposure_ended"; });
    var counts = {};
    ended.forEach(function (e) { counts[e.outcome] = (counts[e.outcome] || 0) + 1; });
    $("h-exp-count").textContent = ended.length ? OUTCOMES.filter(function (o) { return counts[o]; })
      .map(function (o) { return counts[o] + " " + o; }).join(", ") : "";
    if (!ended.length) { empty(box, "No exposures in this span."); return; }
    var lanes = OUTCOMES.filter(function (o) { return counts[o]; });
    OUTCOMES.forEach(function (o) { if (lanes.indexOf(o) < 0 && (o === "completed" || o === "failed")) lanes.push(o); });
    lanes.sort(function (a, b) { return OUTCOMES.indexOf(a) - OUTCOMES.indexOf(b); });
    var laneH = 26;
    var f = frame(box, lanes.length * laneH + 32, 0, lanes.length, [], null, true);
    lanes.forEach(function (o, i) {
      var yMid = f.top + (i + 0.5) * laneH;
      var lab = svg("text", { x: f.left - 6, y: yMid + 4, fill: COLORS[o], "font-size": 12, "text-anchor": "end" }, f.svg);
      lab.textContent = o;
    });
    var marks = 0;
    ended.forEach(function (e) {
      var i = lanes.indexOf(e.outcome);
      if (i < 0) return;
      var cx = f.x(time(e)), yMid = f.top + (i + 0.5) * laneH;
      var m = svg("rect", { x: (cx - 1.5).toFixed(1), y: (yMid - 8).toFixed(1), width: 3, height: 16, rx: 1,
                            fill: COLORS[e.outcome] || COLORS.label, "class": "exp exp-" + e.outcome }, f.svg);
      var tip = svg("title", {}, m);
      tip.textContent = hhmmss(time(e)) + " " + num(e.duration, 1) + " s " + e.outcome + (e.reason ? ": " + e.reason : "");
      marks += 1;
    });
    f.svg.setAttribute("data-points", String(marks));
  }

  // The connection as coloured spans (connected, lost, off-peak, disconnected) with markers at drops and errors.
  function drawEvents() {
    var box = $("plot-events");
    var f = frame(box, 70, 0, 1, [], null, false);
    var state = "unknown", since = f.t0, spans = [];
    var NEXT = { connected: "up", reconnected: "up", resumed: "up", disconnected: "down", server_stop: "down",
                 server_start: "down", connection_lost: "lost", off_peak: "off" };
    data.events.forEach(function (e) {
      var next = NEXT[e.type];
      if (!next) return;
      var t = time(e);
      if (next !== state) { spans.push([since, t, state]); state = next; since = t; }
    });
    spans.push([since, f.t1, state]);
    spans.forEach(function (s) {
      var x0 = f.x(Math.max(s[0], f.t0)), x1 = f.x(Math.min(s[1], f.t1));
      if (x1 - x0 < 0.5 && s[2] !== "lost") return;
      svg("rect", { x: x0.toFixed(1), y: f.top + 6, width: Math.max(2, x1 - x0).toFixed(1), height: f.h - 12,
                    fill: COLORS[s[2]], "class": "span span-" + s[2] }, f.svg);
    });
    var marks = 0;
    // Drops last, so their red markers are on top of the attempts and errors next to them.
    var marked = data.events.filter(function (e) { return e.type === "error" || e.type === "reconnect_failed"; })
      .concat(data.events.filter(function (e) { return e.type === "connection_lost"; }));
    marked.forEach(function (e) {
      var color = e.type === "connection_lost" ? COLORS.lost : COLORS.warn;
      var c = svg("circle", { cx: f.x(time(e)).toFixed(1), cy: f.top + f.h / 2, r: e.type === "connection_lost" ? 6 : 4,
                              fill: color, stroke: "#0e1116", "stroke-width": 1.5, "class": "ev ev-" + e.type }, f.svg);
      var tip = svg("title", {}, c);
      tip.textContent = hhmmss(time(e)) + " " + describe(e)[0];
      marks += 1;
    });
    f.svg.setAttribute("data-points", String(marks));
  }

  // ------------------------------------------------------------------ the list
  // [label, detail, class] for one event.
  function describe(e) {
    switch (e.type) {
      case "server_start": return ["Server started", "", "muted"];
      case "server_stop": return ["Server stopped", "", "muted"];
      case "connected": return ["Connected", "", "ok"];
      case "disconnected": return ["Disconnected", e.reason && e.reason !== "requested" ? e.reason : "", "muted"];
      case "connection_lost":
        return [e.cause === "usb" ? "USB drop" : "Camera stopped answering", e.reason || "", "err"];
      case "reconnect_failed": return ["Reconnect attempt " + (e.attempt || "?") + " failed", "", "warn"];
      case "reconnected":
        return ["Recovered" + (typeof e.recovery_s === "number" ? " in " + e.recovery_s.toFixed(1) + " s" : ""),
                e.attempts ? "after " + e.attempts + " attempt" + (e.attempts === 1 ? "" : "s") : "", "ok"];
      case "error": return ["Error", e.message || "", "err"];
      case "exposure_started": return ["Exposure started", num(e.duration, 3) + " s " + (e.frame_type || ""), "muted"];
      case "exposure_ended":
        return ["Exposure " + e.outcome, num(e.duration, 3) + " s " + (e.frame_type || "") + (e.reason ? " — " + e.reason : ""),
                e.outcome === "failed" ? "err" : e.outcome === "completed" ? "" : "warn"];
      case "off_peak": return ["Off-peak: camera released", e.until ? "until " + e.until : "", "off"];
      case "off_peak_end": return ["Capture window open", "reconnecting", ""];
      case "resumed": return ["Resumed after off-peak", "", "ok"];
      case "resume_failed": return ["Could not resume after off-peak", "", "err"];
      case "settings":
        return ["Settings", Object.keys(e.changes || {}).map(function (k) { return k + "=" + e.changes[k]; }).join(", "), "muted"];
      default: return [e.type, "", "muted"];
    }
  }

  function drawList() {
    var list = $("timeline");
    while (list.firstChild) list.removeChild(list.firstChild);
    var shown = data.events.filter(function (e) { return e.type !== "exposure_started"; }).slice(-300).reverse();
    if (!shown.length) {
      var li0 = document.createElement("li");
      li0.className = "muted";
      li0.textContent = "Nothing recorded in this span.";
      list.appendChild(li0);
      return;
    }
    var lastDay = null;
    shown.forEach(function (e) {
      var t = time(e), d = describe(e);
      if (day(t) !== lastDay) {  // a heading for each local date
        lastDay = day(t);
        var head = document.createElement("li");
        head.className = "day";
        head.textContent = lastDay;
        list.appendChild(head);
      }
      var li = document.createElement("li");
      li.className = "item " + d[2];
      li.dataset.type = e.type;
      var when = document.createElement("time");
      when.dateTime = e.t;
      when.textContent = hhmmss(t);
      var what = document.createElement("span");
      what.className = "what";
      what.textContent = d[0];
      li.appendChild(when);
      li.appendChild(what);
      if (d[1]) {
        var detail = document.createElement("span");
        detail.className = "detail";
        detail.textContent = d[1];
        li.appendChild(detail);
      }
      list.appendChild(li);
    });
  }

  function summaryText(s) {
    var parts = [];
    if (s.drops) {
      var r = (s.recoveries_s || []).map(function (v) { return v.toFixed(1) + " s"; });
      parts.push(s.drops + " USB drop" + (s.drops === 1 ? "" : "s") +
                 (r.length ? ", recovered in " + (r.length > 1 ? r.slice(0, -1).join(", ") + " and " + r[r.length - 1] : r[0]) : "") +
                 (s.unrecovered > 0 ? ", " + s.unrecovered + " not recovered" : ""));
    } else {
      parts.push("no USB drops");
    }
    var total = 0;
    OUTCOMES.forEach(function (o) { total += (s.exposures || {})[o] || 0; });
    parts.push(total + " exposure" + (total === 1 ? "" : "s"));
    if (s.errors) parts.push(s.errors + " error" + (s.errors === 1 ? "" : "s"));
    if (s.off_peak_releases) parts.push(s.off_peak_releases + " off-peak release" + (s.off_peak_releases === 1 ? "" : "s"));
    return parts.join(" · ");
  }

  function draw() {
    if (!data) return;
    $("h-hours").textContent = String(data.hours);
    $("h-summary-text").textContent = summaryText(data.summary || {}) + (data.note ? " (" + data.note + ")" : "");
    $("h-updated").textContent = "updated " + hhmm(Date.parse(data.now));
    drawEvents();
    drawTemperature();
    drawPower();
    drawExposures();
    drawList();
    root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
  }

  // ------------------------------------------------------------------ fetching
  function load() {
    clearTimeout(timer);
    return fetch(base + "/history.json?hours=" + hours, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status + " " + r.statusText); return r.json(); })
      .then(function (d) { data = d; draw(); })
      .catch(function (e) { $("h-updated").textContent = "offline"; $("h-updated").title = String(e); })
      .then(function () { timer = setTimeout(load, document.hidden ? 120000 : 30000); });
  }

  var buttons = document.querySelectorAll("#h-range button");
  Array.prototype.forEach.call(buttons, function (b) {
    b.addEventListener("click", function () {
      hours = Number(b.dataset.hours);
      Array.prototype.forEach.call(buttons, function (o) { o.setAttribute("aria-pressed", o === b ? "true" : "false"); });
      try { history.replaceState(null, "", "?hours=" + hours); } catch (e) { /* ignore */ }
      load();
    });
  });
  var resizeTimer = null;
  window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(draw, 150); });
  document.addEventListener("visibilitychange", function () { if (!document.hidden) load(); });
  load();
})();
