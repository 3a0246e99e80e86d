/* Funil triage: keyboard shortcuts. Everything here is a shortcut for a link, a button
   or a form that works without JavaScript. */
(function () {
  "use strict";
  var ACTIONS = { q: "qualify", d: "disqualify", o: "out_of_focus", v: "convert", n: "note", r: "rate", a: "assign" };

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function openAction(name) {
    var panel = document.getElementById("act-" + name);
    if (!panel) return false;
    panel.open = true;
    var field = panel.querySelector("input:not([type=hidden]), select, textarea");
    (field || panel.querySelector("summary")).focus();
    panel.scrollIntoView({ block: "nearest" });
    return true;
  }

  function showHelp() {
    var dialog = document.getElementById("shortcuts");
    if (dialog && !dialog.open) dialog.showModal();
  }

  var rows = [];
  var current = -1;

  function rowsNow() {
    return Array.prototype.slice.call(document.querySelectorAll("#leads tbody tr[data-href]"));
  }

  function select(index) {
    rows = rowsNow();
    if (!rows.length) return;
    index = Math.max(0, Math.min(rows.length - 1, index));
    if (current >= 0 && rows[current]) {
      rows[current].classList.remove("current");
      rows[current].removeAttribute("aria-current");
    }
    current = index;
    var row = rows[current];
    row.classList.add("current");
    row.setAttribute("aria-current", "true");
    var link = row.querySelector("a.open");
    if (link) link.focus();
    row.scrollIntoView({ block: "nearest" });
  }

  function currentRow() {
    rows = rowsNow();
    return current >= 0 ? rows[current] : null;
  }

  function bulkClaimCurrent() {
    var row = currentRow();
    var form = document.getElementById("bulk");
    if (!row || !form || !form.querySelector("#bulk-action")) return;
    var box = row.querySelector("input[name=leads]");
    if (box) box.checked = true;
    form.querySelector("#bulk-action").value = "claim";
    form.submit();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var dialog = document.getElementById("shortcuts");
    if (dialog && dialog.open) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    var page = document.body.getAttribute("data-page");
    var key = event.key;
    if (key === "?") { showHelp(); event.preventDefault(); return; }
    if (page === "inbox") {
      if (key === "j") { select(current + 1); event.preventDefault(); }
      else if (key === "k") { select(current < 0 ? 0 : current - 1); event.preventDefault(); }
      else if (key === "Enter" && currentRow() && event.target === document.body) {
        window.location.href = currentRow().getAttribute("data-href");
      }
      else if (key === "x" && currentRow()) {
        var box = currentRow().querySelector("input[name=leads]");
        if (box) box.checked = !box.checked;
        event.preventDefault();
      }
      else if (key === "/") {
        var filters = document.querySelector("details.filters");
        if (filters) filters.open = true;
        var search = document.getElementById("f-q");
        if (search) { search.focus(); event.preventDefault(); }
      }
      else if (key === "c") { bulkClaimCurrent(); event.preventDefault(); }
      else if (ACTIONS[key] && currentRow()) {
        window.location.href = currentRow().getAttribute("data-href") + "#act-" + ACTIONS[key];
        event.preventDefault();
      }
    } else if (page === "lead") {
      if (key === "c") {
        var claim = document.getElementById("do-claim");
        if (claim) { claim.click(); event.preventDefault(); }
      } else if (key === "u") {
        window.location.href = document.getElementById("back").getAttribute("href");
      } else if (ACTIONS[key] && openAction(ACTIONS[key])) {
        event.preventDefault();
      }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-help]").forEach(function (button) {
      button.addEventListener("click", showHelp);
    });
    var all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () {
      document.querySelectorAll("#leads input[name=leads]").forEach(function (box) { box.checked = all.checked; });
    });
    if (document.body.getAttribute("data-page") === "lead" && window.location.hash.indexOf("#act-") === 0) {
      openAction(window.location.hash.slice(5));
    }
    document.querySelectorAll("#leads tbody tr[data-href] a.open").forEach(function (link, index) {
      link.addEventListener("focus", function () {
        rows = rowsNow();
        if (current >= 0 && rows[current]) { rows[current].classList.remove("current"); rows[current].removeAttribute("aria-current"); }
        current = index;
        rows[current].classList.add("current");
        rows[current].setAttribute("aria-current", "true");
      });
    });
  });
})();
