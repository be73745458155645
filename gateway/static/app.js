/* Osprey staff UI: small, unobtrusive helpers. Every form works without this file;
   it adds keyboard shortcuts (documented in the "?" dialog), shows the outcome
   choice only when a closing state is chosen, and a "select all" box for bulk actions. */
(function () {
  "use strict";

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  /* --- the help dialog ("?") --------------------------------------------------------- */
  var help = document.getElementById("help");
  function openHelp() {
    if (help && !help.open) {
      if (typeof help.showModal === "function") help.showModal(); else help.setAttribute("open", "");
    }
  }
  document.querySelectorAll("[data-help-open]").forEach(function (b) {
    b.addEventListener("click", openHelp);
  });

  /* --- ticket lists: j/k/o/x ----------------------------------------------------------- */
  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("table[data-keynav] tbody tr"))
      .filter(function (tr) { return tr.querySelector("a[data-open]"); });
  }
  var current = -1;
  function choose(i) {
    var list = rows();
    if (!list.length) return;
    i = Math.max(0, Math.min(list.length - 1, i));
    if (list[current]) list[current].classList.remove("current");
    current = i;
    var row = list[i];
    row.classList.add("current");
    var link = row.querySelector("a[data-open]");
    if (link) link.focus();
    row.scrollIntoView({block: "nearest"});
  }
  function currentRow() {
    var list = rows();
    var active = document.activeElement;
    for (var i = 0; i < list.length; i++) {
      if (list[i].contains(active)) { current = i; return list[i]; }
    }
    return list[current] || null;
  }

  /* --- ticket page: outcome only for closing states -------------------------------------- */
  document.querySelectorAll("select[data-state-select]").forEach(function (select) {
    var closed = (select.getAttribute("data-closed") || "").split(" ").filter(Boolean);
    var box = select.form && select.form.querySelector("[data-outcome]");
    if (!box) return;
    function update() {
      var target = select.value || select.getAttribute("data-current") || "";
      box.hidden = closed.indexOf(target) < 0;
    }
    select.addEventListener("change", update);
    update();
  });

  /* --- bulk: select every ticket on the page -------------------------------------------- */
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    all.hidden = false;
    var table = all.closest("table");
    all.addEventListener("change", function () {
      table.querySelectorAll("tbody input[name=ticket]").forEach(function (box) { box.checked = all.checked; });
    });
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e.target)) return;
    if (help && help.open) return;   /* the dialog closes with Esc by itself */
    var key = e.key;
    if (key === "?") { e.preventDefault(); openHelp(); return; }
    if (key === "/") {
      var q = document.getElementById("q");
      if (q) { e.preventDefault(); q.focus(); }
      return;
    }
    if (key === "j" || key === "k") {
      if (!rows().length) return;
      e.preventDefault();
      var row = currentRow();
      var list = rows();
      var at = row ? list.indexOf(row) : -1;
      choose(at < 0 ? 0 : at + (key === "j" ? 1 : -1));
      return;
    }
    if (key === "o") {
      var open = currentRow();
      if (open) { e.preventDefault(); open.querySelector("a[data-open]").click(); }
      return;
    }
    if (key === "x") {
      var pick = currentRow();
      var box = pick && pick.querySelector("input[name=ticket]");
      if (box) { e.preventDefault(); box.checked = !box.checked; }
      return;
    }
    if (key === "c") {
      var text = document.getElementById("comment-text");
      if (text) { e.preventDefault(); text.focus(); }
      return;
    }
    if (key === "t") {
      var take = document.querySelector("form[data-take]");
      if (take) { e.preventDefault(); take.requestSubmit ? take.requestSubmit() : take.submit(); }
    }
  });
})();
