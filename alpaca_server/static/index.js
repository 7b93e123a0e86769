// /setup: keep each camera's connection state current (polls /setup/cameras.json every 2 s).
(function () {
  "use strict";
  function badgeClass(cam) {
    if (cam.connecting) return "badge busy";
    if (!cam.connected) return "badge off";
    if (/^Error/.test(cam.state)) return "badge err";
    return "badge ok";
  }
  function update(data) {
    (data.cameras || []).forEach(function (cam) {
      var link = document.querySelector("a.camera[data-number='" + cam.number + "']");
      if (!link) return;
      var badge = link.querySelector("[data-state]");
      badge.textContent = cam.state;
      badge.className = badgeClass(cam);
      var temp = link.querySelector("[data-temp]");
      temp.textContent = typeof cam.ccd_temperature === "number" ? "Sensor " + cam.ccd_temperature.toFixed(1) + " °C" : "";
    });
  }
  function poll() {
    fetch("/setup/cameras.json", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) update(data); })
      .catch(function () { /* server restarting: try again */ })
      .then(function () { setTimeout(poll, 2000); });
  }
  poll();
})();
