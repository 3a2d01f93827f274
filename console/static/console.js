// Orderly console: live updates over server-sent events. Every value from
// the server goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const tokenKey = "orderly-console-token";

  // The console token, typed once per tab, fills every write form.
  function rememberToken() {
    let saved = "";
    try { saved = sessionStorage.getItem(tokenKey) || ""; } catch (e) { /* storage off */ }
    for (const input of document.querySelectorAll("input.token")) {
      if (saved && !input.value) input.value = saved;
    }
    for (const form of document.querySelectorAll("form")) {
      form.addEventListener("submit", function () {
        const t = form.querySelector("input.token");
        if (t && t.value) {
          try { sessionStorage.setItem(tokenKey, t.value); } catch (e) { /* storage off */ }
        }
      });
    }
  }

  function text(el, v) {
    if (el) el.textContent = v;
  }

  function fig(v) {
    return v === null || v === undefined ? "\u2014" : String(v);
  }

  function rate(v) {
    return v === null || v === undefined ? "\u2014" : Number(v).toFixed(1);
  }

  function el(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  }

  function setList(ul, items) {
    if (!ul) return;
    ul.replaceChildren(...items.map(function (p) { return el("li", "", p); }));
  }

  function liveState(on) {
    for (const s of document.querySelectorAll("[data-live-state]")) {
      s.classList.toggle("on", on);
      s.classList.toggle("off", !on);
      s.textContent = on ? "live" : "reconnecting";
    }
  }

  function follow(url, handlers) {
    const es = new EventSource(url);
    es.addEventListener("open", function () { liveState(true); });
    es.addEventListener("error", function () { liveState(false); });
    for (const name of Object.keys(handlers)) {
      es.addEventListener(name, function (ev) {
        let data;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        handlers[name](data);
      });
    }
    window.addEventListener("pagehide", function () { es.close(); });
    return es;
  }

  // The overview.
  function overview(root) {
    follow(root.dataset.live, {
      overview: function (o) {
        for (const f of o.workflows || []) {
          const sec = document.querySelector('section.flow[data-wf="' + CSS.escape(f.name) + '"]');
          if (!sec) continue;
          const set = function (name, v) { text(sec.querySelector('[data-fig="' + name + '"]'), v); };
          set("lag", fig(f.lag));
          set("queue_limit", fig(f.queue_limit));
          set("stored", fig(f.stored));
          set("in_per_s", rate(f.in_per_s));
          set("done_per_s", rate(f.done_per_s));
          set("dead_letters", fig(f.dead_letters));
          set("keys", fig(f.keys));
          set("pending_work", fig(f.pending_work));
          set("scheduled", fig(f.scheduled));
          for (const row of sec.querySelectorAll("tr[data-state]")) {
            text(row.querySelector("[data-count]"), f.states ? fig(f.states[row.dataset.state] || 0) : "\u2014");
          }
          const reps = sec.querySelector('[data-list="replicas"]');
          if (reps) {
            reps.replaceChildren(...(f.replicas || []).map(function (r) {
              const tr = el("tr");
              const id = el("td", "", r.id);
              if (r.self) { id.append(" ", el("span", "tag", "this one")); }
              tr.append(id, el("td", "", (r.partitions || []).join(" ")));
              return tr;
            }));
          }
          setList(sec.querySelector('[data-list="problems"]'), f.problems || []);
        }
        const w = o.worker || {};
        for (const name of ["id", "ready", "actors", "running", "queued", "in_flight", "actions_running",
          "actions_queued", "actions_awaiting_retry", "dead_lettered"]) {
          text(document.querySelector('[data-wfig="' + name + '"]'), fig(w[name]));
        }
        text(document.querySelector('[data-wfig="oldest_action"]'), w.oldest_action || "\u2014");
        setList(document.querySelector('[data-wlist="problems"]'), w.problems || []);
      },
    });
  }

  // A key's page: the timeline grows as statuses come.
  const maxRows = 1000;

  function fmtTime(s) {
    const d = new Date(s);
    return isNaN(d) ? String(s) : d.toISOString().replace("T", " ");
  }

  function statusRow(st, fresh) {
    const tr = el("tr", (st.error ? "rejected" : "") + (fresh ? " fresh" : ""));
    const ev = el("td", "", st.event);
    if (st.action) {
      ev.append(" ", el("span", "muted", "(" + st.action + (st.attempt ? " #" + st.attempt : "") + ")"));
    }
    const outcome = el("td");
    if (st.error) {
      outcome.append(el("span", "code", st.error.code), " " + st.error.message);
    } else {
      outcome.textContent = st.settled ? "settled" : "work pending";
    }
    tr.append(el("td", "", fmtTime(st.at)), el("td", "num", String(st.version)), ev,
      el("td", "", st.from), el("td", "", st.to), outcome, el("td", "mono", st.job_id));
    return tr;
  }

  function keyPage(root) {
    const body = document.getElementById("timeline");
    const empty = document.getElementById("timeline-empty");
    const add = function (st, fresh) {
      body.append(statusRow(st, fresh));
      while (body.rows.length > maxRows) body.deleteRow(0);
      if (empty) empty.hidden = true;
    };
    follow(root.dataset.live, {
      history: function (list) {
        if (!list || list.length === 0) return; // keep what the page showed
        body.replaceChildren();
        for (const st of list) add(st, false);
      },
      status: function (st) {
        add(st, true);
      },
      state: function (s) {
        text(document.getElementById("key-state"), s.state);
        text(document.getElementById("key-version"), String(s.version));
        text(document.getElementById("key-updated"), fmtTime(s.updated_at));
        text(document.getElementById("key-data"), s.data);
        const timers = document.getElementById("key-timers");
        if (timers) {
          setList(document.getElementById("key-timer-list"), s.timers || []);
          timers.hidden = !(s.timers && s.timers.length);
        }
      },
      problem: function (msg) {
        const note = document.getElementById("history-note");
        if (!note) return;
        note.textContent = String(msg);
        note.hidden = false;
      },
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    rememberToken();
    const o = document.getElementById("overview");
    if (o && o.dataset.live) overview(o);
    const k = document.getElementById("key");
    if (k && k.dataset.live) keyPage(k);
  });
})();
