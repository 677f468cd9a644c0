// The segment builder: edits the condition tree (the JSON the segments API reads) as
// nested groups of conditions, writes it to the forms' hidden "tree" inputs and asks
// htmx for a new count (debounced by hx-trigger). Problems the server answers carry their
// path in the tree (and[1].value); each is shown beside the condition it concerns.
// Every text comes from the page (data-text, data-catalogue), in the page's language.
(function () {
  "use strict";
  var root = document.getElementById("segment-builder");
  if (!root) { return; }
  var form = document.getElementById("segment-form");
  var cat = JSON.parse(root.dataset.catalogue);
  var T = JSON.parse(root.dataset.text);
  var FIELDS = {};
  cat.fields.forEach(function (f) { FIELDS[f.name] = f; });
  var MULTI = ["in", "not_in", "has_any", "has_all", "has_none"];
  var CHIPS_MAX = 40;

  // --- the model: groups {t:"group", op, neg, items} and conditions ------------------------
  function group(op) { return { t: "group", op: op || "and", neg: false, items: [] }; }
  function fieldCond(name) {
    var f = FIELDS[name];
    return { t: "field", neg: false, field: name, op: f.ops[0], value: defaultValue(f, f.ops[0]) };
  }
  function behaviourCond(name) {
    var c = { t: "behaviour", neg: false, behaviour: name, days: 90 };
    if (name === "bought_category") {
      c.category = cat.categories.length ? cat.categories[0][0] : "";
      c.at_least = 1;
    }
    if (name === "joined_never_bought") { c.days = 30; }
    return c;
  }
  function defaultValue(f, op) {
    if (op === "is_null" || op === "not_null") { return null; }
    if (MULTI.indexOf(op) >= 0) { return []; }
    if (op === "between") { return [null, null]; }
    if (op === "within_days" || op === "more_than_days_ago") { return 30; }
    if (f.kind === "bool") { return true; }
    if (f.choices && f.choices.length && !f.free) { return f.choices[0][0]; }
    return null;
  }

  function fromTree(raw) {
    if (raw === null || typeof raw !== "object") { return null; }
    if ("not" in raw) {
      var inner = fromTree(raw.not);
      if (inner) { inner.neg = !inner.neg; }
      return inner;
    }
    if ("and" in raw || "or" in raw) {
      var op = "and" in raw ? "and" : "or";
      var g = group(op);
      (raw[op] || []).forEach(function (item) { var n = fromTree(item); if (n) { g.items.push(n); } });
      return g;
    }
    if ("tag" in raw) { return { t: "field", neg: false, field: "tags", op: "has", value: raw.tag }; }
    if ("behaviour" in raw) {
      var b = { t: "behaviour", neg: false };
      Object.keys(raw).forEach(function (k) { b[k] = raw[k]; });
      return b;
    }
    if ("field" in raw && FIELDS[raw.field]) {
      return { t: "field", neg: false, field: raw.field, op: raw.op, value: raw.value === undefined ? null : raw.value };
    }
    return null;
  }

  function toTree(n) {
    var out;
    if (n.t === "group") {
      out = {};
      out[n.op] = n.items.map(toTree);
    } else if (n.t === "behaviour") {
      out = { behaviour: n.behaviour, days: n.days };
      if (n.behaviour === "bought_category") { out.category = n.category; out.at_least = n.at_least; }
    } else {
      out = { field: n.field, op: n.op };
      if (n.op !== "is_null" && n.op !== "not_null") { out.value = n.value; }
    }
    return n.neg ? { not: out } : out;
  }

  var model = fromTree(JSON.parse(root.dataset.tree || "null"));
  if (!model || model.t !== "group" || model.neg) {
    var top = group("and");
    if (model) { top.items.push(model); }
    model = top;
  }

  // --- paths as the validation names them: and[0].or[1].value ----------------------------
  function join(path, part) { return path ? path + "." + part : part; }
  function childPath(g, path, i) {
    var inner = g.neg ? join(path, "not") : path;
    return join(inner, g.op) + "[" + i + "]";
  }

  // --- the DOM ---------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { e.textContent = attrs[k]; } else if (k === "cls") { e.className = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { e.appendChild(c); } });
    return e;
  }
  function option(value, label, selected) {
    var o = el("option", { value: value, text: label });
    if (selected) { o.selected = true; }
    return o;
  }
  function notToggle(n) {
    var b = el("button", { type: "button", cls: "seg-not" + (n.neg ? " on" : ""), "aria-pressed": n.neg ? "true" : "false", title: T.not_title, text: T.not });
    b.addEventListener("click", function () { n.neg = !n.neg; changed(true); });
    return b;
  }
  function removeButton(parent, n) {
    var b = el("button", { type: "button", cls: "seg-remove", title: T.remove, "aria-label": T.remove, text: "×" });
    b.addEventListener("click", function () { parent.items.splice(parent.items.indexOf(n), 1); changed(true); });
    return b;
  }

  function fieldPicker(n) {
    var s = el("select", { cls: "seg-field", "aria-label": T.field });
    var groups = {};
    cat.fields.forEach(function (f) {
      if (!groups[f.group]) { groups[f.group] = el("optgroup", { label: f.group }); s.appendChild(groups[f.group]); }
      groups[f.group].appendChild(option("field:" + f.name, f.label, n.t === "field" && n.field === f.name));
    });
    var beh = el("optgroup", { label: cat.behaviour_group });
    cat.behaviours.forEach(function (b) {
      beh.appendChild(option("behaviour:" + b.name, b.label, n.t === "behaviour" && n.behaviour === b.name));
    });
    s.appendChild(beh);
    return s;
  }

  function replaceNode(parent, n, fresh) {
    fresh.neg = n.neg;
    parent.items[parent.items.indexOf(n)] = fresh;
  }

  function renderGroup(g, path, parent) {
    var box = el("div", { cls: "seg-group" + (parent ? " nested" : ""), "data-path": path });
    var head = el("div", { cls: "seg-group-head" });
    head.appendChild(notToggle(g));
    var op = el("select", { cls: "seg-combine", "aria-label": T.group_of });
    op.appendChild(option("and", T.and, g.op === "and"));
    op.appendChild(option("or", T.or, g.op === "or"));
    op.addEventListener("change", function () { g.op = op.value; changed(true); });
    head.appendChild(op);
    head.appendChild(el("span", { cls: "problem" }));
    if (parent) { head.appendChild(removeButton(parent, g)); }
    box.appendChild(head);
    var list = el("div", { cls: "seg-items" });
    g.items.forEach(function (item, i) {
      var p = childPath(g, path, i);
      list.appendChild(item.t === "group" ? renderGroup(item, p, g) : renderCondition(item, p, g));
    });
    if (!g.items.length && !parent) { list.appendChild(el("p", { cls: "muted seg-start", text: T.start })); }
    box.appendChild(list);
    var actions = el("div", { cls: "seg-add" });
    var add = el("button", { type: "button", cls: "btn secondary seg-add-condition", text: "＋ " + T.add });
    add.addEventListener("click", function () { g.items.push(fieldCond("tier")); changed(true); });
    var addGroup = el("button", { type: "button", cls: "btn secondary seg-add-group", text: "＋ " + T.add_group });
    addGroup.addEventListener("click", function () {
      var inner = group(g.op === "and" ? "or" : "and");
      inner.items.push(fieldCond("tier"));
      g.items.push(inner);
      changed(true);
    });
    actions.appendChild(add);
    actions.appendChild(addGroup);
    box.appendChild(actions);
    return box;
  }

  function renderCondition(n, path, parent) {
    var row = el("div", { cls: "seg-cond", "data-path": path });
    row.appendChild(notToggle(n));
    var picker = fieldPicker(n);
    picker.addEventListener("change", function () {
      var parts = picker.value.split(":");
      replaceNode(parent, n, parts[0] === "field" ? fieldCond(parts[1]) : behaviourCond(parts[1]));
      changed(true);
    });
    row.appendChild(picker);
    var body = el("span", { cls: "seg-body" });
    if (n.t === "behaviour") { behaviourInputs(n, body); } else { fieldInputs(n, body); }
    row.appendChild(body);
    row.appendChild(removeButton(parent, n));
    row.appendChild(el("span", { cls: "problem", role: "alert" }));
    return row;
  }

  function numberInput(value, onValue, attrs) {
    var i = el("input", Object.assign({ type: "text", inputmode: "decimal", cls: "seg-num" }, attrs || {}));
    i.value = value === null || value === undefined ? "" : String(value);
    i.addEventListener("input", function () { onValue(i.value); changed(false); });
    return i;
  }
  function asNumber(text, money) {
    var t = String(text).trim().replace(/,/g, "");
    if (t === "") { return null; }
    var v = Number(t);
    if (!isFinite(v)) { return text; } // the server says what is wrong with it
    return money ? Math.round(v * 100) : v;
  }
  function shown(value, money) {
    if (value === null || value === undefined || value === "") { return ""; }
    return money && typeof value === "number" ? String(value / 100) : String(value);
  }

  function behaviourInputs(n, body) {
    if (n.behaviour === "bought_category") {
      var c = el("select", { cls: "seg-category", "aria-label": T.category });
      cat.categories.forEach(function (pair) { c.appendChild(option(pair[0], pair[1], pair[0] === n.category)); });
      c.addEventListener("change", function () { n.category = c.value; changed(false); });
      body.appendChild(c);
      body.appendChild(numberInput(n.at_least, function (v) { n.at_least = asNumber(v); }, { "aria-label": T.times, cls: "seg-num seg-at-least" }));
      body.appendChild(el("span", { cls: "muted", text: T.times }));
    }
    body.appendChild(el("span", { cls: "muted", text: T.in_last }));
    body.appendChild(numberInput(n.days, function (v) { n.days = asNumber(v); }, { "aria-label": T.days, cls: "seg-num seg-days" }));
    body.appendChild(el("span", { cls: "muted", text: T.days }));
  }

  function fieldInputs(n, body) {
    var f = FIELDS[n.field];
    var ops = el("select", { cls: "seg-op", "aria-label": T.operator });
    f.ops.forEach(function (op) { ops.appendChild(option(op, cat.ops[op] || op, op === n.op)); });
    ops.addEventListener("change", function () { n.op = ops.value; n.value = defaultValue(f, n.op); changed(true); });
    body.appendChild(ops);
    var money = f.kind === "money";
    var op = n.op;
    if (op === "is_null" || op === "not_null") { return; }
    if (op === "within_days" || op === "more_than_days_ago") {
      body.appendChild(numberInput(n.value, function (v) { n.value = asNumber(v); }, { "aria-label": T.days, cls: "seg-num seg-value" }));
      body.appendChild(el("span", { cls: "muted", text: T.days }));
      return;
    }
    if (f.kind === "bool") {
      var yn = el("select", { cls: "seg-value", "aria-label": T.value });
      yn.appendChild(option("true", T.yes, n.value === true));
      yn.appendChild(option("false", T.no, n.value === false));
      yn.addEventListener("change", function () { n.value = yn.value === "true"; changed(false); });
      body.appendChild(yn);
      return;
    }
    var dates = f.kind === "date" || f.kind === "datetime";
    if (op === "between") {
      if (!Array.isArray(n.value)) { n.value = [null, null]; }
      [0, 1].forEach(function (k) {
        if (k === 1) { body.appendChild(el("span", { cls: "muted", text: T.and_word })); }
        if (dates) {
          body.appendChild(dateInput(n.value[k], function (v) { n.value[k] = v; }));
        } else {
          body.appendChild(numberInput(shown(n.value[k], money), function (v) { n.value[k] = asNumber(v, money); }, { "aria-label": T.value, cls: "seg-num seg-value" }));
        }
      });
      if (money) { body.appendChild(el("span", { cls: "muted", text: T.yuan })); }
      return;
    }
    if (dates) {
      body.appendChild(dateInput(n.value, function (v) { n.value = v; }));
      return;
    }
    var choices = f.choices || [];
    if (MULTI.indexOf(op) >= 0) {
      if (!Array.isArray(n.value)) { n.value = []; }
      if (choices.length && choices.length <= CHIPS_MAX && !money && f.kind !== "number") {
        body.appendChild(chips(n, choices));
      } else {
        var list = el("input", { type: "text", cls: "seg-value seg-list", placeholder: T.list_hint, "aria-label": T.value });
        list.value = n.value.map(function (v) { return shown(v, money); }).join(", ");
        list.addEventListener("input", function () {
          var parts = list.value.split(/[,，]/).map(function (s) { return s.trim(); }).filter(Boolean);
          n.value = f.kind === "number" || money ? parts.map(function (p) { return asNumber(p, money); }) : parts;
          changed(false);
        });
        body.appendChild(list);
      }
      return;
    }
    if (choices.length && !f.free) {
      var s = el("select", { cls: "seg-value", "aria-label": T.value });
      choices.forEach(function (pair) { s.appendChild(option(pair[0], pair[1], pair[0] === n.value)); });
      if (n.value === null) { n.value = choices[0][0]; }
      s.addEventListener("change", function () { n.value = s.value; changed(false); });
      body.appendChild(s);
      return;
    }
    if (f.kind === "number" || money) {
      body.appendChild(numberInput(shown(n.value, money), function (v) { n.value = asNumber(v, money); }, { "aria-label": T.value, cls: "seg-num seg-value" }));
      if (money) { body.appendChild(el("span", { cls: "muted", text: T.yuan })); }
      return;
    }
    var text = el("input", { type: "text", cls: "seg-value", "aria-label": T.value });
    text.value = n.value || "";
    if (choices.length) { // free text with suggestions (tags)
      var id = "seg-choices-" + n.field;
      if (!document.getElementById(id)) {
        var dl = el("datalist", { id: id });
        choices.forEach(function (pair) { dl.appendChild(option(pair[0], pair[1])); });
        document.body.appendChild(dl);
      }
      text.setAttribute("list", id);
    }
    text.addEventListener("input", function () { n.value = text.value.trim() || null; changed(false); });
    body.appendChild(text);
  }

  function dateInput(value, onValue) {
    var i = el("input", { type: "date", cls: "seg-value seg-date", "aria-label": T.value });
    i.value = value || "";
    i.addEventListener("change", function () { onValue(i.value || null); changed(false); });
    return i;
  }

  function chips(n, choices) {
    var box = el("span", { cls: "seg-chips", role: "group", "aria-label": T.value });
    choices.forEach(function (pair) {
      var c = el("input", { type: "checkbox", value: pair[0] });
      c.checked = n.value.indexOf(pair[0]) >= 0;
      c.addEventListener("change", function () {
        n.value = choices.map(function (p) { return p[0]; }).filter(function (v) {
          return v === pair[0] ? c.checked : n.value.indexOf(v) >= 0;
        });
        changed(false);
      });
      box.appendChild(el("label", { cls: "seg-chip" }, [c, el("span", { text: pair[1] })]));
    });
    return box;
  }

  // --- keeping the forms and the count in step -------------------------------------------
  function serialised() { return model.items.length ? JSON.stringify(toTree(model)) : ""; }
  function render() {
    root.replaceChildren(renderGroup(model, "", null));
  }
  function changed(structure) {
    if (structure) { render(); }
    var text = serialised();
    document.querySelectorAll("input[data-tree]").forEach(function (i) { i.value = text; });
    if (window.htmx) { htmx.trigger(form, "segments:changed"); }
  }

  function showProblems() {
    root.querySelectorAll(".problem").forEach(function (p) { p.textContent = ""; });
    root.querySelectorAll(".invalid").forEach(function (e) { e.classList.remove("invalid"); });
    var nodes = Array.prototype.slice.call(root.querySelectorAll("[data-path]"));
    document.querySelectorAll("#segment-result [data-problem-path]").forEach(function (item) {
      var path = item.getAttribute("data-problem-path");
      var best = null;
      nodes.forEach(function (node) {
        var p = node.getAttribute("data-path");
        var fits = p === "" || path === p || (path.indexOf(p) === 0 && (path[p.length] === "." || path[p.length] === "["));
        if (fits && (!best || p.length > best.getAttribute("data-path").length)) { best = node; }
      });
      if (!best) { return; }
      var slot = best.classList.contains("seg-group") ? best.querySelector(".seg-group-head .problem") : best.querySelector(":scope > .problem");
      var reason = item.lastChild ? item.lastChild.textContent.trim() : item.textContent;
      slot.textContent = slot.textContent ? slot.textContent + "; " + reason : reason;
      best.classList.add("invalid");
    });
  }

  document.getElementById("segment-source").addEventListener("change", function () { changed(false); });
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.target && e.target.id === "segment-result") { showProblems(); }
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
  render();
  var initial = serialised();
  document.querySelectorAll("input[data-tree]").forEach(function (i) { i.value = initial; });
})();
