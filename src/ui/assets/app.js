// windsock web UI: keeps pages live (the page's <main> is fetched again every two seconds and
// swapped in when it changed), sends actions as POSTs carrying the page's anti-forgery header,
// and follows a running try's log. No framework, nothing fetched from elsewhere.
(function () {
  "use strict";
  const csrfMeta = document.querySelector('meta[name="csrf"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  function flash(message, bad) {
    const f = document.getElementById("flash");
    if (!f) return;
    f.textContent = message;
    f.className = bad ? "bad" : "ok";
    clearTimeout(f.hideTimer);
    f.hideTimer = setTimeout(function () { f.textContent = ""; f.className = ""; }, 6000);
  }

  async function refresh() {
    const main = document.getElementById("main");
    if (!main || main.dataset.live !== "true") return;
    // Never pull a form from under someone choosing in it.
    const active = document.activeElement;
    if (active && main.contains(active) && active.closest("form")) return;
    try {
      const resp = await fetch(location.href, { credentials: "same-origin" });
      if (!resp.ok) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = doc.getElementById("main");
      if (fresh && fresh.innerHTML !== main.innerHTML) main.innerHTML = fresh.innerHTML;
    } catch (e) {
      // The server is away (restarting); the next round tries again.
    }
  }

  async function post(url, fields) {
    let resp;
    try {
      resp = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-Windsock-CSRF": csrf, "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(fields),
      });
    } catch (e) {
      flash("the windsock UI did not answer", true);
      return;
    }
    let data = {};
    try { data = await resp.json(); } catch (e) { /* not JSON: a refusal page */ }
    flash(data.message || (resp.ok ? "done" : "refused (HTTP " + resp.status + ")"), !resp.ok);
    await refresh();
  }

  document.addEventListener("click", function (e) {
    const button = e.target.closest("button.post");
    if (!button) return;
    e.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const fields = {};
    for (const [key, value] of Object.entries(button.dataset)) {
      if (key.startsWith("field") && key.length > 5) fields[key.slice(5).toLowerCase()] = value;
    }
    post(button.dataset.url, fields);
  });

  document.addEventListener("submit", function (e) {
    const form = e.target.closest("form.action");
    if (!form) return;
    e.preventDefault();
    if (document.activeElement) document.activeElement.blur();
    post(form.dataset.url, new FormData(form));
  });

  // A try's log: appended as it grows, until the try has ended.
  async function followLog() {
    const log = document.getElementById("log");
    if (!log || log.dataset.running !== "true") return;
    try {
      const resp = await fetch(log.dataset.url + "&offset=" + log.dataset.offset, { credentials: "same-origin" });
      if (resp.ok) {
        const data = await resp.json();
        if (data.text) {
          const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.appendChild(document.createTextNode(data.text));
          if (atEnd) log.scrollTop = log.scrollHeight;
        }
        log.dataset.offset = String(data.offset);
        log.dataset.running = data.running ? "true" : "false";
      }
    } catch (e) { /* try again */ }
    if (log.dataset.running === "true") setTimeout(followLog, 1000);
  }

  setInterval(refresh, 2000);
  followLog();
})();
