// The camera control page: polls status.json about once a second and sends actions as JSON POSTs.
// Everything the camera does is the server's; this script only shows it and forwards the buttons.
(function () {
  "use strict";
  var root = document.getElementById("cam");
  if (!root) return;
  var base = "/setup/v1/camera/" + root.dataset.number;
  var hasCooler = root.dataset.cooler === "1";
  var meta = document.querySelector("meta[name=csrf-token]");
  var csrf = meta ? meta.content : "";
  var last = null;
  var dirty = { settings: false, schedule: false };
  var pending = 0;
  var preview = { seq: 0, loading: false, url: null, failedSeq: -1 };
  var poller = { timer: null, busy: false, again: false, offline: false };
  var okTimer = null;

  function $(id) { return document.getElementById(id); }
  function text(id, value) { var el = $(id); if (el && el.textContent !== value) el.textContent = value; }
  function num(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : null; }

  // ------------------------------------------------------------------ messages
  function showMessage(message, ok) {
    var box = $("msg");
    text("msg-text", message);
    box.className = "msg " + (ok ? "ok" : "err");
    box.setAttribute("role", ok ? "status" : "alert");
    box.hidden = false;
    clearTimeout(okTimer);
    if (ok) okTimer = setTimeout(function () { box.hidden = true; }, 4000);
  }
  $("msg-close").addEventListener("click", function () { $("msg").hidden = true; });

  function errorOf(response) {
    return response.text().then(function (body) {
      try {
        var data = JSON.parse(body);
        if (data && data.error) return data.error;
      } catch (e) { /* not JSON: a plain-text refusal (401/403) */ }
      body = (body || "").replace(/^\d{3}: /, "").trim();
      return body || response.status + " " + response.statusText;
    });
  }

  // ------------------------------------------------------------------ actions
  function action(name, body) {
    pending += 1;
    if (last) render(last);
    return fetch(base + "/action/" + name, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      if (r.ok) return r.json();
      return errorOf(r).then(function (msg) { throw new Error(msg); });
    }).then(function (data) {
      if (!data.ok) throw new Error(data.error || "the server refused the request");
      if (data.message) showMessage(data.message, true);
      return data;
    }).catch(function (e) {
      showMessage(e && e.message ? e.message : String(e), false);
      return null;
    }).then(function (data) {
      pending -= 1;
      pollSoon();
      return data;
    });
  }

  function exposure() { return $("exposure").value.trim(); }
  var storeKey = "zwo-alpaca-cam" + root.dataset.number;
  try {
    var saved = JSON.parse(window.localStorage.getItem(storeKey) || "{}");
    if (saved.exposure) $("exposure").value = saved.exposure;
    if (saved.mode) $("mode").value = saved.mode;
    $("save").checked = !!saved.save;
    if (saved.folder) $("folder").value = saved.folder;
    if (saved.pattern) $("pattern").value = saved.pattern;
    if (saved.count) $("count").value = saved.count;
  } catch (e) { /* ignore */ }
  function remember() {
    try {
      window.localStorage.setItem(storeKey, JSON.stringify({ exposure: exposure(), mode: $("mode").value,
        save: $("save").checked, folder: $("folder").value.trim(), pattern: $("pattern").value.trim(),
        count: $("count").value.trim() }));
    } catch (e) { /* ignore */ }
  }
  ["exposure", "mode", "save", "folder", "pattern", "count"].forEach(function (id) { $(id).addEventListener("change", remember); });
  function showSaveFields() { $("save-fields").hidden = !$("save").checked; }
  $("save").addEventListener("change", showSaveFields);
  showSaveFields();
  function loopBody() {
    var body = { exposure: exposure(), mode: $("mode").value, save: $("save").checked };
    if (body.save) {
      body.directory = $("folder").value.trim();
      body.pattern = $("pattern").value.trim();
      body.count = $("count").value.trim();
    }
    return body;
  }

  $("connect").addEventListener("click", function () { action("connect"); });
  $("disconnect").addEventListener("click", function () { action("disconnect"); });
  $("expose").addEventListener("click", function () { action("expose", { duration: exposure() }); });
  $("abort").addEventListener("click", function () { action("abort"); });
  $("start").addEventListener("click", function () { action("capture", loopBody()); });
  $("stop").addEventListener("click", function () { action("stop"); });

  // ------------------------------------------------------------------ settings form
  var form = $("settings-form");
  var FIELDS = ["gain", "offset", "bin", "readout_mode", "start_x", "start_y", "width", "height", "usb_bandwidth"];
  function setField(name, value) {
    var el = $("f-" + name);
    if (!el) return;
    if (el.type === "checkbox") el.checked = !!value;
    else el.value = value === null || value === undefined ? "" : String(value);
  }
  function limits(id, range) {
    var el = $(id);
    if (!el) return;
    if (range) { el.min = range.min; el.max = range.max; } else { el.removeAttribute("min"); el.removeAttribute("max"); }
  }
  function fillSettings(s) {
    var set = s.settings || {};
    var info = s.info || {};
    FIELDS.forEach(function (name) { setField(name, set[name]); });
    setField("high_speed", set.high_speed);
    if (hasCooler) {
      ["cooler_on", "target_temperature", "ramp_slope", "ramp_threshold", "warm_at_disconnect"].forEach(function (name) {
        setField(name, set[name]);
      });
    }
    limits("f-gain", info.gain); limits("f-offset", info.offset); limits("f-usb_bandwidth", info.usb_bandwidth);
    if (hasCooler) limits("f-target_temperature", info.target_temperature);
  }
  function hints(s) {
    var info = s.info || {};
    var set = s.settings || {};
    function range(r) { return r ? r.min + "–" + r.max : ""; }
    text("r-gain", range(info.gain));
    text("r-offset", range(info.offset));
    text("r-usb", info.usb_bandwidth ? range(info.usb_bandwidth) + " %" : "");
    var b = Number(($("f-bin") || {}).value || set.bin || 1);
    text("r-roi", info.max_width ? "(sensor " + Math.floor(info.max_width / b) + " × " + Math.floor(info.max_height / b) + " at " + b + "×" + b + ")" : "");
    var hs = $("f-high_speed");
    if (hs) hs.closest(".field").hidden = info.high_speed === false;
    renderAuto(info.auto_controls || [], set.auto_controls || {});
  }

  // The controls the SDK can run itself: one "auto" checkbox each, applied at once (action/auto).
  // A control on auto has its field disabled and left out of Apply: a value would make it manual.
  var autoSettings = {};
  function renderAuto(list, on) {
    var box = $("auto-list");
    var key = JSON.stringify(list);
    if (box.dataset.key !== key) {
      box.textContent = "";
      list.forEach(function (c) {
        var field = document.createElement("div");
        field.className = "field check";
        var label = document.createElement("label");
        var input = document.createElement("input");
        input.type = "checkbox";
        input.id = "auto-" + c.name;
        input.dataset.control = c.name;
        label.appendChild(input);
        label.appendChild(document.createTextNode(" " + c.name + " auto"));
        field.appendChild(label);
        box.appendChild(field);
      });
      box.dataset.key = key;
      $("auto-controls").hidden = list.length === 0;
    }
    autoSettings = {};
    list.forEach(function (c) {
      var input = $("auto-" + c.name);
      if (input && !input.dataset.busy) input.checked = !!on[c.name];
      if (c.setting && $("f-" + c.setting)) {
        autoSettings[c.setting] = !!on[c.name];
        $("f-" + c.setting).disabled = !!on[c.name];
      }
    });
  }
  ["input", "change"].forEach(function (kind) {
    $("auto-list").addEventListener(kind, function (ev) {
      ev.stopPropagation();  // not a form edit: applied at once, the form stays as it is
      var input = ev.target;
      if (kind !== "change" || !input.dataset.control) return;
      input.dataset.busy = "1";
      action("auto", { control: input.dataset.control, on: input.checked }).then(function () {
        delete input.dataset.busy;
      });
    });
  });
  form.addEventListener("input", function () { dirty.settings = true; });
  form.addEventListener("change", function () { dirty.settings = true; if (last) hints(last); });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = {};
    FIELDS.forEach(function (name) {
      var el = $("f-" + name);
      if (el && !autoSettings[name]) body[name] = el.value.trim();
    });
    body.high_speed = $("f-high_speed").checked;
    if (hasCooler) {
      body.cooler_on = $("f-cooler_on").checked;
      body.warm_at_disconnect = $("f-warm_at_disconnect").checked;
      ["target_temperature", "ramp_slope", "ramp_threshold"].forEach(function (name) { body[name] = $("f-" + name).value.trim(); });
    }
    action("settings", body).then(function (data) { if (data) dirty.settings = false; });
  });
  $("revert").addEventListener("click", function () { dirty.settings = false; if (last) { fillSettings(last); hints(last); } });
  $("full-frame").addEventListener("click", function () {
    setField("start_x", 0); setField("start_y", 0); setField("width", ""); setField("height", "");
    dirty.settings = true;
  });

  // ------------------------------------------------------------------ schedule form
  var sched = $("schedule-form");
  sched.addEventListener("input", function () { dirty.schedule = true; });
  sched.addEventListener("submit", function (ev) {
    ev.preventDefault();
    action("schedule", { window: $("f-schedule").value.trim() }).then(function (data) { if (data) dirty.schedule = false; });
  });
  $("schedule-clear").addEventListener("click", function () {
    action("schedule", { window: "" }).then(function (data) { if (data) { dirty.schedule = false; $("f-schedule").value = ""; } });
  });

  // ------------------------------------------------------------------ preview
  function loadPreview(seq) {
    preview.loading = true;
    var info = {};
    fetch(base + "/preview.png?seq=" + seq + "&w=800", { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) return errorOf(r).then(function (msg) { throw new Error(msg); });
        info.seq = Number(r.headers.get("X-Frame-Seq") || seq);
        info.size = r.headers.get("X-Frame-Size") || "";
        info.duration = r.headers.get("X-Frame-Duration") || "";
        info.type = r.headers.get("X-Frame-Type") || "";
        return r.blob();
      })
      .then(function (blob) {
        var img = $("preview");
        var old = preview.url;
        preview.url = URL.createObjectURL(blob);
        img.onload = function () { if (old) URL.revokeObjectURL(old); };
        img.src = preview.url;
        img.dataset.seq = String(info.seq);
        img.hidden = false;
        $("preview-empty").hidden = true;
        preview.seq = info.seq;
        var parts = ["#" + info.seq];
        if (info.size) parts.push(info.size.replace("x", " × "));
        if (info.duration) parts.push(Number(info.duration) + " s");
        if (info.type) parts.push(info.type);
        text("preview-info", parts.join(" · "));
      })
      .catch(function (e) {
        preview.failedSeq = seq;  // do not hammer the server with the same failing frame
        text("preview-empty", "No preview: " + (e && e.message ? e.message : e));
      })
      .then(function () { preview.loading = false; });
  }

  // ------------------------------------------------------------------ status
  var KNOWN_COUNTERS = [["disconnects", "Disconnects"], ["reconnects", "Reconnects"],
    ["reconnect_failures", "Reconnect failures"], ["connect_failures", "Connect failures"],
    ["exposures", "Exposures"], ["frames", "Frames"], ["video_timeouts", "Video timeouts"],
    ["off_peak_releases", "Off-peak releases"]];
  function renderCounters(counters) {
    if (!counters) return;
    var rows = [];
    var seen = {};
    var failures = 0;
    Object.keys(counters).forEach(function (k) { if (k.indexOf("failure:") === 0) failures += counters[k]; });
    KNOWN_COUNTERS.forEach(function (pair) { seen[pair[0]] = true; rows.push([pair[1], counters[pair[0]] || 0]); });
    rows.splice(3, 0, ["Failures (all causes)", failures]);
    Object.keys(counters).sort().forEach(function (k) {
      if (seen[k]) return;
      rows.push([k.replace("failure:", "failure: ").replace("teardown_failure:", "teardown failure: ").replace(/_/g, " "), counters[k]]);
    });
    var body = $("counters-body");
    var html = rows.map(function (r) {
      return "<tr" + (r[1] ? "" : " class='zero'") + "><td></td><td>" + Number(r[1]) + "</td></tr>";
    }).join("");
    if (body.dataset.html !== JSON.stringify(rows)) {
      body.innerHTML = html;
      var cells = body.querySelectorAll("tr td:first-child");
      rows.forEach(function (r, i) { cells[i].textContent = r[0]; });
      body.dataset.html = JSON.stringify(rows);
    }
  }

  // The loop's own line: where it saves, how many files, dropped frames, or why it ended.
  function loopText(c, st) {
    if (!c) return "";
    if (c.phase === "waiting" || c.phase === "connecting") return "Loop: " + c.message;
    var parts = [];
    if (c.save) {
      parts.push((c.running ? "Saving to " : "Saved to ") + c.directory + ": " + c.saved + (c.count ? "/" + c.count : "") + " file(s)");
      if (c.dropped) parts.push(c.dropped + " frame(s) dropped (the disk is slower than the camera)");
      if (c.failed) parts.push(c.failed + " not written");
      if (c.last_file) parts.push("last " + c.last_file.split("/").pop());
      if (c.write_error) parts.push(c.write_error);
    }
    if (!c.running || !st.capturing) {
      if (c.error) parts.push("loop ended: " + c.error);
      else if (c.message) parts.push(c.message);
    }
    return parts.join(" · ");
  }
  function renderLoop(c, st) {
    var line = loopText(c, st);
    text("loop-status", line);
    $("loop-status").className = "small" + (c && (c.error || c.write_error || c.dropped) ? " err" : " muted");
    var running = !!(c && c.running);
    ["save", "folder", "pattern", "count"].forEach(function (id) { $(id).disabled = running || st.capturing; });
    if (running && c.save && document.activeElement !== $("folder")) {
      $("save").checked = true;
      showSaveFields();
      var rootText = $("capture-root").textContent;
      var dir = c.directory || "";
      if (dir === rootText) dir = "";
      else if (dir.indexOf(rootText + "/") === 0) dir = dir.slice(rootText.length + 1);
      $("folder").value = dir;
      $("pattern").value = c.pattern || "";
      $("count").value = c.count || "";
    }
  }

  function badgeClass(st) {
    if (!st.connected) return st.connecting ? "badge busy" : "badge off";
    if (st.state === "error" || st.ascom_state === "Error") return "badge err";
    if (st.connecting || st.state === "exposing" || st.state === "reading" || st.state === "capturing") return "badge busy";
    return "badge ok";
  }

  function render(s) {
    last = s;
    var st = s.status;
    var busy = pending > 0;
    var badge = $("badge");
    text("badge", st.label);
    badge.className = badgeClass(st);
    badge.dataset.state = st.state;
    text("conn-state", st.connecting ? (st.connected ? "Connecting…" : "Disconnecting…") : st.connected ? "Connected" : "Disconnected");
    text("status-text", st.status_text || "");
    var err = $("last-error");
    if (st.error) { err.hidden = false; text("last-error", "Last error: " + st.error); } else { err.hidden = true; }

    var ready = st.connected && !st.connecting && (st.state === "idle" || st.state === "image_ready");
    var exposing = st.state === "exposing" || st.state === "reading";
    $("connect").disabled = busy || st.connected || st.connecting;
    $("disconnect").disabled = busy || (!st.connected && !st.connecting);
    $("expose").disabled = busy || !ready;
    $("abort").disabled = busy || !exposing;
    $("start").disabled = busy || st.capturing || !(ready || (st.connected && st.state === "off_peak"));
    $("stop").disabled = busy || !(st.capturing || (s.capture && s.capture.running));  // a resumed loop may wait
    $("bar").style.width = (exposing ? st.percent : 0) + "%";

    text("s-state", st.label + (st.connected ? " (ASCOM " + st.ascom_state + ")" : ""));
    var progress = "-";
    if (st.state === "exposing") progress = st.status_text + " · " + st.percent + " %";
    else if (st.state === "reading") progress = "Reading out";
    else if (st.capturing) {
      var c = s.capture;
      progress = "Continuous" + (c ? " (" + c.mode + ", " + c.exposure + " s)" : "") + (st.state === "off_peak" ? ", paused off-peak" : "");
    }
    text("s-progress", progress);
    renderLoop(s.capture, st);
    var t = num(st.ccd_temperature, 1);
    text("s-temp", t === null ? "-" : t + " °C");
    if (hasCooler) {
      var parts = [st.cooler_on ? "On" : "Off"];
      var p = num(st.cooler_power, 0);
      if (p !== null) parts.push(p + " % power");
      var target = num(st.target_temperature, 1);
      if (target !== null) parts.push("target " + target + " °C");
      // The ramp's own setpoint while it is on its way to the target; "reached" within the threshold.
      var step = num(st.ramp_setpoint, 1);
      if (step !== null && target !== null && step !== target) parts.push("ramping, now " + step + " °C");
      if (st.temperature_reached === true) parts.push("reached");
      if (st.state === "warming") parts.push("warming up before releasing the camera");
      text("s-cooler", parts.join(" · "));
    } else {
      text("s-cooler", "none on this model");
    }
    text("s-offpeak", st.off_peak_until ? "Released until " + st.off_peak_until
      : s.schedule ? "Inside the window " + s.schedule : "No schedule");
    if (typeof st.last_exposure_duration === "number" && st.last_exposure_start) {
      var when = new Date(st.last_exposure_start);
      text("s-last", st.last_exposure_duration + " s at " + when.toLocaleTimeString());
    } else {
      text("s-last", "-");
    }
    renderCounters(s.counters);
    if (s.settings) {
      if (!dirty.settings && !busy) fillSettings(s);
      hints(s);
    }
    if (!dirty.schedule && !busy && typeof s.schedule === "string") $("f-schedule").value = s.schedule;
    text("schedule-now", s.schedule ? "Current window: " + s.schedule + (st.off_peak_until ? " (now off-peak)" : "") : "No window: the camera is never released on a schedule.");

    if (st.frame_seq > 0 && st.frame_seq !== preview.seq && st.frame_seq !== preview.failedSeq && !preview.loading) {
      loadPreview(st.frame_seq);
    }
  }

  // ------------------------------------------------------------------ polling
  function poll() {
    clearTimeout(poller.timer);
    if (poller.busy) { poller.again = true; return; }
    poller.busy = true;
    fetch(base + "/status.json", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.ok) return r.json();
        return errorOf(r).then(function (msg) { throw new Error(msg); });
      })
      .then(function (s) {
        if (poller.offline) { poller.offline = false; $("msg").hidden = true; }
        if (s.csrf) csrf = s.csrf;
        render(s);
      })
      .catch(function (e) {
        if (!poller.offline) showMessage("Lost contact with the server (" + (e && e.message ? e.message : e) + "); retrying…", false);
        poller.offline = true;
        text("badge", "Server unreachable");
        $("badge").className = "badge err";
      })
      .then(function () {
        poller.busy = false;
        var delay = poller.again ? 50 : document.hidden ? 5000 : 1000;
        poller.again = false;
        poller.timer = setTimeout(poll, delay);
      });
  }
  function pollSoon() {
    if (poller.busy) { poller.again = true; return; }
    clearTimeout(poller.timer);
    poller.timer = setTimeout(poll, 100);
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) pollSoon(); });
  poll();
})();
