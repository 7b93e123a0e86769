// Shared by every page: the night-mode switch (a red, dimmed view that keeps dark adaptation).
(function () {
  "use strict";
  var KEY = "zwo-alpaca-night";
  var button = document.getElementById("night");
  function apply(on) {
    document.body.classList.toggle("night", on);
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }
  var stored = false;
  try { stored = window.localStorage.getItem(KEY) === "1"; } catch (e) { /* private mode */ }
  apply(stored);
  if (button) {
    button.addEventListener("click", function () {
      var on = !document.body.classList.contains("night");
      apply(on);
      try { window.localStorage.setItem(KEY, on ? "1" : "0"); } catch (e) { /* ignore */ }
    });
  }
})();
