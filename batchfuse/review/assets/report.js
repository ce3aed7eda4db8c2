(() => {
  "use strict";
  const PAGE_SIZE = __PAGE_SIZE__;
  const items = JSON.parse(document.getElementById("bf-items").textContent);
  const cardsEl = document.getElementById("cards");
  const shownEl = document.getElementById("shown");
  const search = document.getElementById("q");
  const buttons = Array.from(document.querySelectorAll("#filters button"));
  const pagers = Array.from(document.querySelectorAll(".pager"));
  const SAFE_URL = /^https?:\/\//i;
  const view = { state: "all", q: "", page: 1 };
  let matches = items;

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

  function outputs(item) {
    const box = el("div", "outputs");
    if (!item.outputs.length) box.append(el("span", "thumb nothumb", "no output"));
    for (const o of item.outputs) {
      const fig = el("figure");
      fig.append(link(o.href, picture(o, "thumb")), el("figcaption", null, o.size ? o.name + " · " + o.size : o.name));
      box.append(fig);
    }
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

  function card(item) {
    const c = el("article", "card state-" + item.state);
    c.dataset.state = item.state;
    c.dataset.key = item.key;
    const head = el("header");
    head.append(el("span", "key", item.key), el("span", "badge", item.state));
    const facts = item.attempts + (item.attempts === 1 ? " attempt" : " attempts") +
      (item.tokens ? " · " + item.tokens.toLocaleString() + " tokens" : "");
    c.append(head, outputs(item), el("p", "facts", facts), el("p", "prompt", item.prompt));
    if (item.refs.length) c.append(refs(item));
    if (item.error) {
      const e = el("p", "error");
      if (item.error_class) e.append(el("b", null, "[" + item.error_class + "] "));
      e.append(document.createTextNode(item.error));
      c.append(e);
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

  function render() {
    const pages = Math.max(1, Math.ceil(matches.length / PAGE_SIZE));
    view.page = Math.min(Math.max(1, view.page), pages);
    const start = (view.page - 1) * PAGE_SIZE;
    const shown = matches.slice(start, start + PAGE_SIZE);
    const frag = document.createDocumentFragment();
    for (const it of shown) frag.append(card(it));
    cardsEl.replaceChildren(frag);
    shownEl.textContent = shown.length
      ? "showing " + (start + 1) + "–" + (start + shown.length) + " of " + matches.length +
        (matches.length !== items.length ? " (" + items.length + " in all)" : "")
      : "no items match";
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.state === view.state));
    for (const p of pagers) pager(p, pages);
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  function saveHash() {
    const p = new URLSearchParams();
    if (view.state !== "all") p.set("state", view.state);
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
    return {
      state: buttons.some((b) => b.dataset.state === state) ? state : "all",
      q: p.get("q") || "",
      page: Math.max(1, parseInt(p.get("page") || "1", 10) || 1),
    };
  }

  function update(changes, refilter) {
    Object.assign(view, changes);
    if (refilter) filter();
    render();
    saveHash();
  }

  function turn(page) {
    update({ page: page }, false);
    window.scrollTo(0, 0);
  }

  for (const b of buttons) b.addEventListener("click", () => update({ state: b.dataset.state, page: 1 }, true));
  let timer = 0;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => update({ q: search.value, page: 1 }, true), 150);
  });
  window.addEventListener("hashchange", () => {
    const wanted = readHash();
    if (wanted.state !== view.state || wanted.q !== view.q || wanted.page !== view.page) {
      search.value = wanted.q;
      update(wanted, true);
    }
  });
  const initial = readHash();
  search.value = initial.q;
  update(initial, true);
})();
