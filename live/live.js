// hallpass live sessions: warns before the idle timeout, keeps the tabs
// of one browser in agreement, and leaves the page at once when the
// session ends elsewhere. Configured by data-attributes on its own
// <script> tag (see package live); no inline code, no dependencies.
// Without it, or without JavaScript, pages work as before.
(() => {
  "use strict";
  const me = document.currentScript;
  if (!me || !window.fetch) return;
  const attr = (name, def) => me.getAttribute("data-" + name) || def;
  const warnBefore = parseInt(attr("warn-before", "120"), 10);
  const cfg = {
    status: attr("status-url", "/session"),
    extend: attr("extend-url", "/session/extend"),
    events: attr("events-url", ""),
    login: attr("login-url", "/login"),
    warn: (warnBefore >= 0 ? warnBefore : 120) * 1000,
  };
  const maxWait = 30 * 1000; // re-ask at least this often while a deadline is near

  let state = null; // {auth, user} from the last status
  let idleAt = 0, absAt = 0; // deadlines, in this browser's clock
  let timer = 0, ticker = 0;
  let source = null, refused = false;
  let leaving = false, signingOut = false;
  let dialog = null, shownFor = 0, dismissed = 0, returnFocus = null;

  // --- the server's view -------------------------------------------------

  // poll asks for the status as a background request: it never slides the
  // idle deadline, so polling cannot keep a forgotten tab signed in.
  function poll() {
    return fetch(cfg.status, {
      credentials: "same-origin",
      cache: "no-store",
      headers: {"Hallpass-Background": "1", "Accept": "application/json"},
    }).then((r) => {
      if (!r.ok) throw new Error("status " + r.status);
      return r.json();
    }).then(apply, () => arm(maxWait));
  }

  function apply(st) {
    const was = state;
    state = {auth: !!st.authenticated, user: st.user || ""};
    const skew = Date.now() - parse(st.server_time);
    const local = (t) => (t ? parse(t) + skew : 0);
    if (was && was.auth && (!state.auth || state.user !== was.user)) {
      // Ended while this page was open: say why if we can tell.
      leave(Date.now() >= Math.min(idleAt, absAt) ? "expired" : "revoked");
      return;
    }
    idleAt = local(st.idle_expires_at);
    absAt = local(st.absolute_expires_at);
    if (state.auth && !was) {
      tell({type: "signin", user: state.user});
      listen();
    }
    schedule();
  }

  // parse reads Go's RFC 3339 times, whose nanoseconds not every
  // browser's Date.parse accepts.
  function parse(t) {
    return Date.parse(String(t).replace(/(\.\d{3})\d+/, "$1"));
  }

  function schedule() {
    if (!state || !state.auth || leaving) return hide();
    const now = Date.now(), end = Math.min(idleAt, absAt);
    if (now < end - cfg.warn) {
      hide();
      // Other tabs may slide the deadline meanwhile: ask again then.
      return arm(Math.min(end - cfg.warn - now, 3600 * 1000));
    }
    if (now < end) {
      show(end);
      return arm(Math.min(end - now + 1000, maxWait));
    }
    arm(5000); // past it but the server still says live: clocks differ
  }

  function arm(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function extend() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    const headers = {"Accept": "application/json"};
    if (meta) headers["X-CSRF-Token"] = meta.content;
    fetch(cfg.extend, {method: "POST", credentials: "same-origin", headers})
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("extend " + r.status))))
      .then((st) => {
        apply(st);
        tell({type: "extend", status: st});
      }, poll);
  }

  function leave(reason, quiet) {
    if (leaving || signingOut) return;
    leaving = true;
    clearTimeout(timer);
    if (source) source.close();
    if (!quiet) tell({type: "signout", reason});
    const to = new URL(cfg.login, location.href);
    to.searchParams.set("ended", reason);
    to.searchParams.set("next", location.pathname + location.search);
    location.assign(to.href);
  }

  // --- other devices: server-sent events ---------------------------------

  function listen() {
    if (!cfg.events || !window.EventSource || source || refused) return;
    source = new EventSource(cfg.events);
    source.addEventListener("ended", (e) => {
      let reason = "revoked";
      try {
        reason = JSON.parse(e.data).reason || reason;
      } catch (_) { /* keep the default */ }
      source.close();
      leave(reason);
    });
    source.addEventListener("error", () => {
      // CLOSED means refused (signed out, too many tabs): do not reopen;
      // the status and the other tabs still tell this one.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        refused = true;
        poll();
      }
    });
  }

  // --- other tabs: BroadcastChannel, or the storage event ----------------

  const channel = window.BroadcastChannel ? new BroadcastChannel("hallpass") : null;
  const storageKey = "hallpass.live";

  function tell(msg) {
    if (channel) return channel.postMessage(msg);
    try {
      // Setting then removing fires "storage" in the other tabs and
      // leaves nothing behind.
      localStorage.setItem(storageKey, JSON.stringify({msg, n: Math.random()}));
      localStorage.removeItem(storageKey);
    } catch (_) { /* storage disabled: the tabs poll on their own */ }
  }

  function hear(msg) {
    if (!msg || !state) return;
    if (msg.type === "extend" && state.auth && msg.status) apply(msg.status);
    else if (msg.type === "signout" && state.auth) leave(msg.reason || "logged_out", true);
    else if (msg.type === "signin" && (!state.auth || state.user !== msg.user)) location.reload();
  }

  if (channel) channel.onmessage = (e) => hear(e.data);
  else addEventListener("storage", (e) => {
    if (e.key !== storageKey || !e.newValue) return;
    try {
      hear(JSON.parse(e.newValue).msg);
    } catch (_) { /* not ours */ }
  });

  // A sign-out form this page submits ends the session itself: the
  // ended event it causes must not race the form's own navigation. The
  // other tabs are told once the next page confirms it.
  addEventListener("submit", (e) => {
    if (e.defaultPrevented || !e.target.closest("[data-hallpass-signout]")) return;
    signingOut = true;
    try {
      sessionStorage.setItem(storageKey, "signout");
    } catch (_) { /* the other tabs learn from the server instead */ }
  });
  let signedOut = false;
  try {
    signedOut = sessionStorage.getItem(storageKey) === "signout";
    sessionStorage.removeItem(storageKey);
  } catch (_) { /* no session storage */ }

  // --- the dialog --------------------------------------------------------

  function build() {
    const d = document.createElement("dialog");
    d.className = "hallpass-dialog";
    d.setAttribute("aria-labelledby", "hallpass-dialog-title");
    d.setAttribute("aria-describedby", "hallpass-dialog-text");
    const title = document.createElement("h2");
    title.id = "hallpass-dialog-title";
    const text = document.createElement("p");
    text.id = "hallpass-dialog-text";
    const stay = document.createElement("button");
    stay.type = "button";
    stay.className = "hallpass-stay";
    stay.textContent = "Stay signed in";
    stay.addEventListener("click", () => {
      d.close();
      extend();
    });
    const close = document.createElement("button");
    close.type = "button";
    close.className = "hallpass-close";
    close.textContent = "Close";
    close.addEventListener("click", () => {
      dismissed = shownFor;
      d.close();
    });
    d.append(title, text, stay, close);
    // Escape: like Close, do not ask again about the same deadline.
    d.addEventListener("cancel", () => {
      dismissed = shownFor;
    });
    d.addEventListener("close", () => {
      clearInterval(ticker);
      if (returnFocus && returnFocus.focus) returnFocus.focus();
    });
    document.body.append(d);
    return d;
  }

  function show(end) {
    if (!window.HTMLDialogElement || !document.body || dismissed === end) return;
    if (!dialog) dialog = build();
    shownFor = end;
    const idleFirst = idleAt <= absAt;
    dialog.querySelector("h2").textContent = idleFirst ? "Are you still there?" : "Your session is ending";
    dialog.querySelector(".hallpass-stay").hidden = !idleFirst;
    const update = () => {
      const s = Math.max(0, Math.round((end - Date.now()) / 1000));
      const left = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
      dialog.querySelector("p").textContent = idleFirst
        ? "You will be signed out in " + left + " because of inactivity."
        : "Your session ends in " + left + ". Sign in again to continue.";
    };
    update();
    clearInterval(ticker);
    ticker = setInterval(update, 1000);
    if (!dialog.open) {
      returnFocus = document.activeElement;
      dialog.showModal();
      (idleFirst ? dialog.querySelector(".hallpass-stay") : dialog.querySelector(".hallpass-close")).focus();
    }
  }

  function hide() {
    if (dialog && dialog.open) dialog.close();
  }

  // --- start ---------------------------------------------------------------

  // A page back from sleep or from the back-forward cache may be stale.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !leaving) poll();
  });
  addEventListener("pageshow", (e) => {
    if (e.persisted && !leaving) poll();
  });

  poll().then(() => {
    if (signedOut && state && !state.auth) tell({type: "signout", reason: "logged_out"});
  });
})();
