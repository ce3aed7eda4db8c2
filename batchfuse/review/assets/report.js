(() => {
  "use strict";
  const PAGE_SIZE = __PAGE_SIZE__;
  // Two faces of one page: the static report carries its items (#bf-items); the review server's
  // page carries a token instead and asks the JSON API, a page at a time, and can judge.
  const tokenMeta = document.querySelector('meta[name="batchfuse-token"]');
  const LIVE = tokenMeta !== null;
  const TOKEN = LIVE ? tokenMeta.getAttribute("content") : "";
  const dataEl = document.getElementById("bf-items");
  const items = dataEl ? JSON.parse(dataEl.textContent) : [];
  const cardsEl = document.getElementById("cards");
  const shownEl = document.getElementById("shown");
  const search = document.getElementById("q");
  const buttons = Array.from(document.querySelectorAll("#filters button"));
  const pagers = Array.from(document.querySelectorAll(".pager"));
  const SAFE_URL = /^https?:\/\//i;
  const VERDICTS = ["all", "approved", "rejected", "none"];
  const view = { state: "all", verdict: "all", q: "", page: 1 };
  let matches = items;
  let shown = [];
  let selected = 0;
  let asked = 0;
  let verdictButtons = [];
  let notice = null;

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function link(href, child) {
    const a = el("a");
    if (href) a.setAttribute("href", href);
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.append(child);
    return a;
  }

  function picture(entry, cls) {
    if (!entry.thumb) return el("span", cls + " nothumb", entry.note || "no preview");
    const img = el("img", cls);
    img.loading = "lazy";  // before src: an image made by script starts loading when src is set
    img.decoding = "async";
    img.alt = entry.name;
    img.setAttribute("src", entry.thumb);
    return img;
  }

  function figure(o, caption, item, n) {
    const fig = el("figure");
    const a = link(o.href, picture(o, "thumb"));
    if (LIVE && o.href) {
      a.addEventListener("click", (ev) => { ev.preventDefault(); openViewer(o.href, o.name); });
    }
    fig.append(a, el("figcaption", null, caption));
    if (LIVE && item) {
      fig.dataset.pick = o.name;
      if (item.pick === o.name) fig.classList.add("picked");
      if (n) fig.dataset.n = String(n);
    }
    return fig;
  }

  function outputs(item) {
    const box = el("div", "outputs");
    if (!item.outputs.length) box.append(el("span", "thumb nothumb", "no output"));
    item.outputs.forEach((o, i) => {
      const caption = (LIVE && i < 9 ? (i + 1) + " · " : "") + (o.size ? o.name + " · " + o.size : o.name);
      box.append(figure(o, caption, item, i + 1));
    });
    return box;
  }

  function versions(item) {
    const box = el("div", "versions");
    box.append(el("p", "facts", "earlier versions (" + item.versions.length + ")"));
    const row = el("div", "outputs");
    const first = item.outputs.length;
    item.versions.slice().reverse().forEach((v, i) => {
      const n = first + i + 1;
      row.append(figure(v, (n <= 9 ? n + " · " : "") + "v" + v.version + " · " + v.name, item, n));
    });
    box.append(row);
    return box;
  }

  function refs(item) {
    const box = el("div", "refs");
    for (const r of item.refs) {
      if (r.url !== undefined) {
        box.append(r.url && SAFE_URL.test(r.url) ? link(r.url, el("span", null, r.url)) : el("span", null, r.name));
        box.lastChild.classList.add("reflink");
      } else {
        const a = link(r.href, picture(r, "ref"));
        a.title = r.name;
        box.append(a);
      }
    }
    return box;
  }

  function actions(item) {
    const box = el("div", "actions");
    for (const [verdict, label] of [["approve", "approve (a)"], ["reject", "reject (r)"], ["new_seed", "new seed (n)"],
                                    ["clear", "undo"]]) {
      const b = el("button", "act-" + verdict, label);
      b.type = "button";
      b.dataset.act = verdict;
      b.addEventListener("click", () => {
        if (verdict === "reject") openReject(item);
        else if (verdict === "new_seed") judge(item, { verdict: "reject", new_seed: true });
        else judge(item, { verdict: verdict });
      });
      box.append(b);
    }
    const form = el("form", "reject-form");
    form.hidden = true;
    const note = el("input", "note");
    note.placeholder = "note (why)";
    note.name = "note";
    const extra = el("input", "prompt-extra");
    extra.placeholder = "add to the prompt";
    extra.name = "prompt_extra";
    const seedBox = el("label", "seed", " new seed");
    const seed = el("input");
    seed.type = "checkbox";
    seed.name = "new_seed";
    seedBox.prepend(seed);
    const send = el("button", null, "reject");
    send.type = "submit";
    form.append(note, extra, seedBox, send);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      judge(item, { verdict: "reject", note: note.value, prompt_extra: extra.value, new_seed: seed.checked });
    });
    form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { form.hidden = true; ev.stopPropagation(); } });
    box.append(form);
    return box;
  }

  function history(item) {
    const list = el("ul", "history");
    for (const h of item.history) {
      const when = new Date(h.at * 1000).toLocaleString();
      let text = h.verdict + " by " + h.reviewer + ", " + when;
      if (h.revision) text += " → revision " + h.revision;
      if (h.note) text += " — " + h.note;
      if (h.prompt_extra) text += " [+ " + h.prompt_extra + "]";
      if (h.new_seed) text += " [new seed]";
      if (h.pick) text += " [pick " + h.pick + "]";
      const li = el("li", h.undone ? "undone" : null, text);
      list.append(li);
    }
    return list;
  }

  function card(item, index) {
    const c = el("article", "card state-" + item.state);
    c.dataset.state = item.state;
    c.dataset.key = item.key;
    const head = el("header");
    head.append(el("span", "key", item.key), el("span", "badge", item.state));
    c.dataset.verdict = item.verdict || "none";
    if (item.verdict) head.append(el("span", "verdict verdict-" + item.verdict, item.verdict === "approve" ? "approved" : "rejected"));
    if (LIVE) {
      c.tabIndex = -1;
      c.addEventListener("click", (ev) => { if (!ev.target.closest("a, button, input, form")) select(index); });
    }
    let facts = item.attempts + (item.attempts === 1 ? " attempt" : " attempts") +
      (item.tokens ? " · " + item.tokens.toLocaleString() + " tokens" : "");
    if (LIVE && item.cost) facts += " · cost " + item.cost.toFixed(4);
    if (LIVE && item.revision) facts += " · revision " + item.revision;
    c.append(head, outputs(item));
    if (LIVE && item.versions.length) c.append(versions(item));
    c.append(el("p", "facts", facts), el("p", "prompt", item.prompt));
    if (item.refs.length) c.append(refs(item));
    if (item.error) {
      const e = el("p", "error");
      if (item.error_class) e.append(el("b", null, "[" + item.error_class + "] "));
      e.append(document.createTextNode(item.error));
      c.append(e);
    }
    if (LIVE) {
      c.append(actions(item));
      if (item.history.length) c.append(history(item));
    }
    return c;
  }

  function haystack(item) {
    if (item._hay === undefined) {
      item._hay = [item.key, item.prompt, item.error || "", item.error_class || ""].join("\n").toLowerCase();
    }
    return item._hay;
  }

  function filter() {
    const q = view.q.trim().toLowerCase();
    matches = items.filter((it) => (view.state === "all" || it.state === view.state) && (!q || haystack(it).includes(q)));
  }

  // -- where the items come from: the page's own data, or the review server's API

  function fromPage() {
    const start = (view.page - 1) * PAGE_SIZE;
    return { items: matches.slice(start, start + PAGE_SIZE), total: matches.length, all: items.length };
  }

  function fromServer() {
    const p = new URLSearchParams({ page: String(view.page), page_size: String(PAGE_SIZE) });
    if (view.state !== "all") p.set("state", view.state);
    if (view.verdict !== "all") p.set("verdict", view.verdict);
    if (view.q.trim()) p.set("q", view.q.trim());
    return fetch("/api/items?" + p.toString(), { headers: { Accept: "application/json" } }).then((r) => {
      if (!r.ok) throw new Error("the server answered " + r.status);
      return r.json();
    }).then((data) => {
      showCounts(data.counts, data.verdicts);
      return { items: data.items, total: data.total, all: data.counts.total };
    });
  }

  function showCounts(counts, verdicts) {
    for (const li of document.querySelectorAll("#counts [data-count]")) {
      const n = counts[li.dataset.count];
      if (n !== undefined) li.querySelector("b").textContent = String(n);
    }
    for (const b of buttons) {
      const n = b.dataset.state === "all" ? counts.total : counts[b.dataset.state];
      if (n !== undefined) b.querySelector("span").textContent = String(n);
    }
    for (const b of verdictButtons) {
      const v = b.dataset.verdict;
      const n = v === "all" ? counts.total : verdicts[v === "none" ? "unjudged" : v];
      if (n !== undefined) b.querySelector("span").textContent = String(n);
    }
  }

  function pager(nav, pages) {
    const prev = el("button", null, "‹ previous");
    const next = el("button", null, "next ›");
    prev.type = next.type = "button";
    prev.disabled = view.page <= 1;
    next.disabled = view.page >= pages;
    prev.addEventListener("click", () => turn(view.page - 1));
    next.addEventListener("click", () => turn(view.page + 1));
    nav.replaceChildren(prev, el("span", null, "page " + view.page + " of " + pages), next);
  }

  function render(result) {
    const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));
    if (view.page > pages) {  // the filter shrank under us: go to the last page there is
      view.page = pages;
      return load();
    }
    const start = (view.page - 1) * PAGE_SIZE;
    shown = result.items;
    const frag = document.createDocumentFragment();
    shown.forEach((it, i) => frag.append(card(it, i)));
    cardsEl.replaceChildren(frag);
    shownEl.textContent = shown.length
      ? "showing " + (start + 1) + "–" + (start + shown.length) + " of " + result.total +
        (result.total !== result.all ? " (" + result.all + " in all)" : "")
      : "no items match";
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.state === view.state));
    for (const b of verdictButtons) b.setAttribute("aria-pressed", String(b.dataset.verdict === view.verdict));
    for (const p of pagers) pager(p, pages);
    if (LIVE) select(Math.min(selected, Math.max(0, shown.length - 1)), false);
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    return undefined;
  }

  function load() {
    if (!LIVE) return render(fromPage());  // all in the page already: at once, no waiting
    const mine = ++asked;
    return fromServer().then((result) => {
      if (mine === asked) return render(result);  // an answer overtaken by a newer question is dropped
      return undefined;
    }).catch((err) => say(String(err.message || err)));
  }

  function saveHash() {
    const p = new URLSearchParams();
    if (view.state !== "all") p.set("state", view.state);
    if (view.verdict !== "all") p.set("verdict", view.verdict);
    if (view.q) p.set("q", view.q);
    if (view.page > 1) p.set("page", String(view.page));
    const hash = "#" + p.toString();
    if (location.hash !== hash && !(hash === "#" && !location.hash)) {
      try { location.replace(hash); } catch (e) { /* some file:// setups refuse; the view still works */ }
    }
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const state = p.get("state") || "all";
    const verdict = p.get("verdict") || "all";
    return {
      state: buttons.some((b) => b.dataset.state === state) ? state : "all",
      verdict: LIVE && VERDICTS.includes(verdict) ? verdict : "all",
      q: p.get("q") || "",
      page: Math.max(1, parseInt(p.get("page") || "1", 10) || 1),
    };
  }

  function update(changes, refilter) {
    Object.assign(view, changes);
    if (refilter && !LIVE) filter();
    saveHash();
    return load();
  }

  function turn(page) {
    selected = 0;
    update({ page: page }, false);
    window.scrollTo(0, 0);
  }

  // -- judging (the review server's page only)

  function say(text) {
    if (notice) notice.textContent = text;
  }

  function judge(item, body) {
    return fetch("/api/items/" + encodeURIComponent(item.key) + "/verdict", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Batchfuse-Token": TOKEN },
      body: JSON.stringify(body),
    }).then((r) => r.json().then((data) => {
      if (!r.ok) throw new Error(data.error || ("the server answered " + r.status));
      say(item.key + ": " + (body.verdict === "clear" ? "verdict undone" : body.verdict + (body.pick ? " " + body.pick : "")));
      return load();
    })).catch((err) => say(item.key + ": " + (err.message || err)));
  }

  function openReject(item) {
    const c = cardsEl.querySelector('.card[data-key="' + CSS.escape(item.key) + '"]');
    if (!c) return;
    const form = c.querySelector(".reject-form");
    form.hidden = false;
    form.querySelector(".note").focus();
  }

  function select(index, scroll) {
    if (!shown.length) return;
    selected = Math.max(0, Math.min(index, shown.length - 1));
    cardsEl.querySelectorAll(".card.selected").forEach((c) => c.classList.remove("selected"));
    const c = cardsEl.children[selected];
    if (!c) return;
    c.classList.add("selected");
    if (scroll !== false) c.scrollIntoView({ block: "nearest" });
  }

  function openViewer(href, name) {
    let viewer = document.getElementById("viewer");
    if (!viewer) {
      viewer = el("div");
      viewer.id = "viewer";
      viewer.addEventListener("click", () => { viewer.hidden = true; });
      document.body.append(viewer);
    }
    const img = el("img");
    img.alt = name;
    img.setAttribute("src", href);
    viewer.replaceChildren(img, el("p", null, name + " — click or Esc to close"));
    viewer.hidden = false;
  }

  function columns() {
    const cards = Array.from(cardsEl.children);
    if (cards.length < 2) return 1;
    const top = cards[0].offsetTop;
    const n = cards.findIndex((c) => c.offsetTop !== top);
    return n < 0 ? cards.length : n;
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const viewer = document.getElementById("viewer");
    if (ev.key === "Escape" && viewer && !viewer.hidden) { viewer.hidden = true; return; }
    const typing = ev.target.closest && ev.target.closest("input, textarea, select");
    if (typing) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    const item = shown[selected];
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
    if (ev.key in moves) {
      select(selected + moves[ev.key]);
    } else if (ev.key === "/") {
      search.focus();
    } else if (!item) {
      return;
    } else if (ev.key === "a") {
      judge(item, { verdict: "approve" });
    } else if (ev.key === "r") {
      openReject(item);
    } else if (ev.key === "n") {
      judge(item, { verdict: "reject", new_seed: true });
    } else if (ev.key === "u") {
      judge(item, { verdict: "clear" });
    } else if (/^[1-9]$/.test(ev.key)) {
      const fig = cardsEl.children[selected].querySelector('figure[data-n="' + ev.key + '"]');
      if (!fig) return;
      judge(item, { verdict: "approve", pick: fig.dataset.pick });
    } else if (ev.key === "Enter") {
      const first = item.outputs[0];
      if (first) openViewer(first.href, first.name);
    } else {
      return;
    }
    ev.preventDefault();
  }

  // A live update must not throw away what the user is typing: while a reject form is open the
  // reload waits (sending the form reloads anyway).
  function reloadWhenIdle() {
    if (cardsEl.querySelector(".reject-form:not([hidden])")) {
      setTimeout(reloadWhenIdle, 500);
      return;
    }
    load();
  }

  function liveSetup() {
    const nav = el("nav");
    nav.id = "verdicts";
    verdictButtons = VERDICTS.map((v) => {
      const b = el("button", null, (v === "none" ? "not judged" : v) + " ");
      b.type = "button";
      b.dataset.verdict = v;
      b.append(el("span", null, ""));
      b.addEventListener("click", () => { selected = 0; update({ verdict: v, page: 1 }, true); });
      nav.append(b);
      return b;
    });
    search.before(nav);
    notice = el("p");
    notice.id = "notice";
    notice.setAttribute("role", "status");
    shownEl.after(notice);
    document.addEventListener("keydown", onKey);
    let pending = 0;
    const events = new EventSource("/api/events");
    events.addEventListener("change", (ev) => {
      const data = JSON.parse(ev.data);
      document.body.dataset.events = String(Number(document.body.dataset.events || 0) + 1);
      showCounts(data.counts, data.verdicts);
      // reload when something shown changed, or when a filter may have let items in or out
      const onPage = new Set(shown.map((it) => it.key));
      const filtered = view.state !== "all" || view.verdict !== "all" || data.changed.length >= 1000;
      if (!filtered && !data.changed.some((k) => onPage.has(k))) return;
      clearTimeout(pending);
      pending = setTimeout(reloadWhenIdle, 100);
    });
  }

  for (const b of buttons) b.addEventListener("click", () => { selected = 0; update({ state: b.dataset.state, page: 1 }, true); });
  let timer = 0;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { selected = 0; update({ q: search.value, page: 1 }, true); }, 150);
  });
  window.addEventListener("hashchange", () => {
    const wanted = readHash();
    if (wanted.state !== view.state || wanted.verdict !== view.verdict || wanted.q !== view.q || wanted.page !== view.page) {
      search.value = wanted.q;
      update(wanted, true);
    }
  });
  if (LIVE) liveSetup();
  const initial = readHash();
  search.value = initial.q;
  update(initial, true);
})();
