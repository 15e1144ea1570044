// voxedge operator panel. Plain ES2020, no build step, no external resources: the server's CSP
// allows 'self' only, so there is no inline script or style anywhere and every handler is attached here.
"use strict";

(() => {
  const POLL_MS = 300; // /api/state while visible (~3 Hz)
  const POLL_HIDDEN_MS = 1500; // a background tab needs no fast updates
  const POLL_RETRY_MS = 1500; // after a failed poll
  const FETCH_TIMEOUT_MS = 2500;
  const DRIVE_PERIOD_MS = 100; // the server stops the robot after 500 ms without a drive request
  const STREAM_RETRY_MS = 5000; // live view after an error (e.g. 503: viewer limit)
  const STREAM_STALE_MS = 4000; // streaming, but the server has counted no viewer for this long
  const SSE_RETRY_MS = 3000; // EventSource gives up for good on a non-200 answer (e.g. 503); we retry
  const ESTOP_TRIES = 3;
  const ESTOP_RETRY_MS = 200;
  const LOG_MAX = 150; // entries kept in the command log
  const LEVEL_FLOOR_DBFS = -80;
  const FRAME_AGE_OK_S = 0.25;
  const FRAME_AGE_WARN_S = 1.0;
  const TOKEN_KEY = "voxedge.operatorToken"; // sessionStorage: gone with the tab, never sent as a cookie

  const $ = (id) => document.getElementById(id);
  const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const SIM = document.body.dataset.sim === "true";
  let lastState = null;

  // -- small helpers ---------------------------------------------------------------------------
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmt = (v, digits = 2, unit = "") => (isNum(v) ? `${v.toFixed(digits)}${unit ? ` ${unit}` : ""}` : "–");
  const pct = (v) => (isNum(v) ? `${Math.round(v * 100)} %` : "–");
  const setText = (id, text) => {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  };
  const clamp01 = (x) => Math.min(1, Math.max(0, x));

  function setPill(el, text, tone) {
    if (el.textContent !== text) el.textContent = text;
    el.className = `pill pill-${tone}`;
  }

  function clockTime(wallSeconds) {
    const d = isNum(wallSeconds) ? new Date(wallSeconds * 1000) : new Date();
    return d.toLocaleTimeString([], { hour12: false });
  }

  async function fetchWithTimeout(url, init = {}) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      return await fetch(url, { cache: "no-store", ...init, signal: ctl.signal });
    } catch (err) {
      if (err.name === "AbortError") throw new Error(`no answer within ${FETCH_TIMEOUT_MS / 1000} s`);
      throw new Error(`the robot is unreachable (${err.message})`);
    } finally {
      clearTimeout(timer);
    }
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && body.error) return `${body.error} (${res.status})`;
    } catch (_) {
      // not JSON: fall through to the status line
    }
    return `HTTP ${res.status} ${res.statusText}`.trim();
  }

  // -- status line -----------------------------------------------------------------------------
  function showStatus(text, tone = "info") {
    const el = $("action-status");
    el.textContent = text;
    el.className = `status status-${tone}`;
  }

  // -- operator token ------------------------------------------------------------------------------
  const token = {
    get() {
      try {
        return sessionStorage.getItem(TOKEN_KEY) || "";
      } catch (_) {
        return "";
      }
    },
    set(value) {
      try {
        if (value) sessionStorage.setItem(TOKEN_KEY, value);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) {
        showStatus("This browser blocks sessionStorage: the token cannot be kept.", "error");
      }
      renderToken();
    },
  };

  function renderToken() {
    const has = Boolean(token.get());
    for (const el of document.querySelectorAll("[data-needs-token]")) el.disabled = !has;
    setText("token-status", has ? "Token set for this tab." : "No token: only E-STOP works.");
    $("token").placeholder = has ? "token set (type to replace)" : "paste token";
  }

  // POST an operator action: bearer token + CSRF header, JSON body when there is one.
  async function postAction(path, body) {
    const t = token.get();
    if (!t) throw new Error("enter the operator token first");
    const headers = { Authorization: `Bearer ${t}`, "X-CSRF-Token": csrfToken };
    const init = { method: "POST", headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetchWithTimeout(path, init);
    if (!res.ok) {
      const err = new Error(await errorText(res));
      err.status = res.status;
      throw err;
    }
    return res.json().catch(() => ({}));
  }

  // -- E-STOP: no token, no CSRF header, no waiting on anything else ----------------------------
  // The e-stop listener on its own port (busy or hostile clients of the main port cannot block it), and
  // the main port's /api/estop: both are sent at once, the first success counts.
  const estopPort = document.querySelector('meta[name="estop-port"]')?.content;
  const estopUrls = ["/api/estop"];
  // location.hostname keeps an IPv6 address's brackets
  if (estopPort) estopUrls.unshift(`${location.protocol}//${location.hostname}:${estopPort}/api/estop`);

  async function sendEstop(url) {
    // keepalive: the request survives the page being closed right after the press
    const res = await fetchWithTimeout(url, { method: "POST", keepalive: true, mode: "cors", credentials: "omit" });
    if (!res.ok) throw new Error(await errorText(res));
    return res;
  }

  async function estop() {
    stopHolding(); // no trailing zero drive: the e-stop supersedes it (and would answer it with 409)
    const button = $("estop");
    button.classList.add("estop-sent");
    for (let attempt = 1; attempt <= ESTOP_TRIES; attempt += 1) {
      try {
        await Promise.any(estopUrls.map(sendEstop)).catch((e) => {
          throw e.errors?.[0] ?? e;
        });
        showStatus("E-STOP sent. Clear failsafe, then arm, to move again.", "error");
        setTimeout(() => button.classList.remove("estop-sent"), 600);
        return;
      } catch (err) {
        const text = `E-STOP FAILED (try ${attempt} of ${ESTOP_TRIES}): ${err.message}`;
        showStatus(text, "error");
        banner(text);
        await new Promise((resolve) => setTimeout(resolve, ESTOP_RETRY_MS));
      }
    }
    button.classList.remove("estop-sent");
  }

  const isTextEntry = (el) =>
    el instanceof HTMLTextAreaElement ||
    el?.isContentEditable ||
    (el instanceof HTMLInputElement && !["range", "checkbox", "radio", "button", "submit"].includes(el.type));

  // Capture phase: the e-stop keys win over every other handler. Space is left to text fields
  // (people type spaces); Escape always stops.
  window.addEventListener(
    "keydown",
    (e) => {
      const space = e.code === "Space" || e.key === " ";
      if (e.key === "Escape" || (space && !isTextEntry(e.target))) {
        e.preventDefault();
        e.stopPropagation();
        if (!e.repeat) estop();
      }
    },
    true,
  );
  // A focused button would otherwise "click" on Space's keyup (and e.g. arm the robot).
  window.addEventListener(
    "keyup",
    (e) => {
      if ((e.code === "Space" || e.key === " ") && !isTextEntry(e.target)) e.preventDefault();
    },
    true,
  );

  // -- manual driving: hold to move ---------------------------------------------------------
  const DIRECTIONS = { forward: [1, 0], backward: [-1, 0], left: [0, 1], right: [0, -1] };
  const KEYS = {
    arrowup: "forward", w: "forward", arrowdown: "backward", s: "backward",
    arrowleft: "left", a: "left", arrowright: "right", d: "right",
  };
  const held = new Map(); // direction -> how many sources hold it (a key and a pointer may overlap)
  const keysDown = new Set(); // drive keys down now (to ignore auto-repeat)
  let driveTimer = null;
  let driveInFlight = false;
  let zeroAfterFlight = false; // a moving request may still be on its way: follow it with a stop

  function driveVector() {
    let lin = 0;
    let ang = 0;
    for (const dir of held.keys()) {
      lin += DIRECTIONS[dir][0];
      ang += DIRECTIONS[dir][1];
    }
    return {
      linear_m_s: lin * Number($("speed-linear").value),
      angular_rad_s: ang * Number($("speed-angular").value),
    };
  }

  function renderDrive() {
    for (const b of document.querySelectorAll("button.drive")) {
      const on = held.has(b.dataset.dir);
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
    setText("drive-indicator", held.size ? [...held.keys()].join(" + ") : "stopped");
    $("drive-pad").classList.toggle("driving", held.size > 0);
  }

  async function sendDrive() {
    if (!held.size || driveInFlight) return; // never queue requests behind a slow one
    driveInFlight = true;
    try {
      await postAction("/api/drive", driveVector());
    } catch (err) {
      stopHolding(); // 401/403/409...: holding on would only repeat the error
      showStatus(`Drive: ${err.message}`, "error");
    } finally {
      driveInFlight = false;
      if (zeroAfterFlight) {
        zeroAfterFlight = false;
        sendZero();
      }
    }
  }

  function sendZero() {
    if (!token.get()) return;
    if (driveInFlight) zeroAfterFlight = true;
    postAction("/api/drive", { linear_m_s: 0, angular_rad_s: 0 }).catch((err) =>
      showStatus(`Drive stop: ${err.message}`, "error"),
    );
  }

  function stopHolding() {
    keysDown.clear();
    held.clear();
    clearInterval(driveTimer);
    driveTimer = null;
    renderDrive();
  }

  function driveChanged() {
    renderDrive();
    if (held.size) {
      if (!token.get()) {
        stopHolding();
        showStatus("Drive: enter the operator token first", "error");
        return;
      }
      sendDrive();
      if (!driveTimer) driveTimer = setInterval(sendDrive, DRIVE_PERIOD_MS);
    } else {
      clearInterval(driveTimer);
      driveTimer = null;
      sendZero(); // stop now rather than after the server's 500 ms dead-man
    }
  }

  function press(dir) {
    held.set(dir, (held.get(dir) || 0) + 1);
    if (held.get(dir) === 1) driveChanged();
  }

  function release(dir) {
    const n = held.get(dir);
    if (!n) return;
    if (n > 1) held.set(dir, n - 1);
    else {
      held.delete(dir);
      driveChanged();
    }
  }

  function releaseDrive() {
    if (!held.size) return;
    held.clear();
    driveChanged();
  }

  for (const b of document.querySelectorAll("button.drive")) {
    const dir = b.dataset.dir;
    let down = false; // this pointer's hold, so that leave after up does not release a key's hold
    b.addEventListener("pointerdown", (e) => {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      e.preventDefault(); // no text selection, no focus scroll, no emulated mouse events on touch
      b.focus({ preventScroll: true });
      // Capture: the hold lasts until this pointer lifts (or is cancelled), wherever it is then. Without it a
      // layout change, an alert appearing above the pad, moves the button from under a still mouse, and the
      // pointerleave that follows drops the hold mid-drive. Touch pointers are captured this way already.
      try {
        b.setPointerCapture(e.pointerId);
      } catch {
        // the pointer is already gone: pointerup/pointercancel follow and release
      }
      if (!down) {
        down = true;
        press(dir);
      }
    });
    const up = () => {
      if (down) {
        down = false;
        release(dir);
      }
    };
    for (const type of ["pointerup", "pointerleave", "pointercancel", "lostpointercapture"]) b.addEventListener(type, up);
    b.addEventListener("contextmenu", (e) => e.preventDefault()); // long press on a tablet
  }

  const pad = $("drive-pad");
  pad.addEventListener("keydown", (e) => {
    const dir = KEYS[e.key.toLowerCase()];
    if (!dir || e.altKey || e.ctrlKey || e.metaKey) return;
    e.preventDefault(); // arrows would scroll the page
    if (keysDown.has(e.key.toLowerCase())) return; // auto-repeat
    keysDown.add(e.key.toLowerCase());
    press(dir);
  });
  // keyup on window: focus may have moved while the key was down.
  window.addEventListener("keyup", (e) => {
    const k = e.key.toLowerCase();
    if (keysDown.delete(k)) release(KEYS[k]);
  });
  const releaseKeys = () => {
    keysDown.clear();
    releaseDrive();
  };
  pad.addEventListener("focusout", (e) => {
    if (!pad.contains(e.relatedTarget)) releaseKeys();
  });
  window.addEventListener("blur", releaseKeys);
  window.addEventListener("pagehide", releaseKeys);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) releaseKeys();
  });

  for (const [input, out, digits] of [["speed-linear", "speed-linear-out", 2], ["speed-angular", "speed-angular-out", 1]]) {
    $(input).addEventListener("input", () => setText(out, Number($(input).value).toFixed(digits)));
  }

  // -- read access (read_auth): where the robot shows itself to the operator only ------------------
  // The live view and the event stream cannot send the token, so the token buys a session cookie.
  const readAuth = document.querySelector('meta[name="read-auth"]')?.content === "on";

  async function openSession(t) {
    const res = await fetchWithTimeout("/api/session", { method: "POST", headers: { Authorization: `Bearer ${t}` }, credentials: "same-origin" });
    if (!res.ok) throw new Error(await errorText(res));
    // what failed without the cookie: start again now
    stopStream();
    startStream();
    events?.close();
    connectEvents();
    loadBundle();
  }

  // -- buttons and forms ---------------------------------------------------------------------
  $("estop").addEventListener("click", estop);

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (!value) {
      showStatus("Type the operator token first.", "error");
      return;
    }
    token.set(value);
    $("token").value = "";
    showStatus("Token set.", "ok");
    if (readAuth) openSession(value).catch((err) => showStatus(`The robot refused the token: ${err.message}`, "error"));
  });
  $("token-forget").addEventListener("click", () => {
    releaseDrive();
    token.set("");
    showStatus("Token forgotten.", "info");
    if (readAuth) fetchWithTimeout("/api/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  });

  for (const [id, path, label] of [
    ["btn-arm", "/api/arm", "Arm"],
    ["btn-disarm", "/api/disarm", "Disarm"],
    ["btn-clear", "/api/clear-failsafe", "Clear failsafe"],
  ]) {
    const b = $(id);
    b.dataset.needsToken = "";
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await postAction(path);
        showStatus(`${label}: requested.`, "ok");
      } catch (err) {
        showStatus(`${label}: ${err.message}`, "error");
      } finally {
        b.disabled = !token.get();
      }
    });
  }
  for (const b of document.querySelectorAll("button.drive")) b.dataset.needsToken = "";

  const sayForm = $("say-form");
  if (sayForm && SIM) {
    $("say-button").dataset.needsToken = "";
    sayForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const input = $("say-text");
      const text = input.value.trim();
      if (!text) return;
      $("say-button").disabled = true;
      try {
        await postAction("/api/say", { text });
        showStatus(`Said: “${text}”`, "ok");
        input.value = "";
      } catch (err) {
        showStatus(`Say: ${err.message}`, "error");
      } finally {
        $("say-button").disabled = !token.get();
      }
    });
  }

  $("alert-banner-close").addEventListener("click", () => {
    $("alert-banner").hidden = true;
  });

  function banner(text) {
    setText("alert-banner-text", text);
    $("alert-banner").hidden = false;
  }

  // -- live view (MJPEG) ---------------------------------------------------------------------
  const live = $("live");
  let streaming = false;
  let streamRetry = null;
  let sawViewer = false; // the server has counted a viewer since this stream started
  let noViewerSince = null; // ... and then none for a while although we stream: our stream died

  function startStream() {
    clearTimeout(streamRetry);
    if (streaming || document.hidden) return;
    streaming = true;
    sawViewer = false;
    noViewerSince = null;
    // a fresh URL each time: a failed image URL may be served again from the memory cache
    live.src = `${live.dataset.src}?t=${Date.now()}`;
  }

  function stopStream() {
    streaming = false;
    clearTimeout(streamRetry);
    live.removeAttribute("src"); // closes the connection: frees a viewer slot on the robot
  }

  let streamDown = false; // the last attempt failed and no frame has arrived since

  function renderLiveMessage() {
    if (streamDown && streaming && live.naturalWidth > 0) streamDown = false; // a frame: it is back
    let text = "";
    if (streamDown) {
      // an <img> cannot see the status code: the viewer count from /api/state tells a 503 for the cap
      const svc = lastState?.service;
      const retry = `Retrying every ${STREAM_RETRY_MS / 1000} s…`;
      text = svc && isNum(svc.max_viewers) && svc.viewers >= svc.max_viewers
        ? `Live view: the robot already serves ${svc.viewers} of ${svc.max_viewers} viewers (its limit). ${retry}`
        : `Live view unavailable (camera stopped or robot busy). ${retry}`;
    }
    setText("live-message", text);
    $("live-message").hidden = !text;
    live.parentElement.classList.toggle("stream-down", streamDown);
  }

  // An MJPEG <img> fires no event when the server ends the stream; the last frame just stays.
  // The server's viewer count tells: if it sees nobody while we think we stream, reconnect.
  function checkStream(svc) {
    if (!streaming || !svc || !isNum(svc.viewers) || svc.viewers > 0 || !sawViewer) {
      if (streaming && svc?.viewers > 0) sawViewer = true;
      noViewerSince = null;
      return;
    }
    const now = performance.now();
    if (noViewerSince === null) noViewerSince = now;
    else if (now - noViewerSince > STREAM_STALE_MS) {
      stopStream();
      startStream();
    }
  }

  live.addEventListener("error", () => {
    if (!streaming) return;
    streaming = false;
    streamDown = true;
    renderLiveMessage();
    streamRetry = setTimeout(startStream, STREAM_RETRY_MS);
  });
  document.addEventListener("visibilitychange", () => (document.hidden ? stopStream() : startStream()));

  // -- state rendering -----------------------------------------------------------------------
  const STATE_TONE = { ARMED: "ok", DISARMED: "neutral", FAILSAFE: "warn", ESTOP: "bad" };
  const SOURCE_TONE = { policy: "ok", manual: "info", stalled: "warn", held: "warn", estop: "bad", idle: "neutral" };
  const LATENCY_STAGES = [
    ["frame_match", "frame match"],
    ["preprocess", "preprocess"],
    ["inference", "inference"],
    ["total", "total"],
    ["speech_end_to_decision", "speech end → decision"],
  ];

  function renderCamera(cam, svc) {
    const badge = $("frame-age");
    if (!cam) {
      badge.textContent = "no camera";
      badge.className = "badge badge-bad";
      setText("cam-health", "none");
    } else {
      const age = cam.latest_age_s;
      let tone = "bad";
      if (isNum(age) && age < FRAME_AGE_OK_S) tone = "ok";
      else if (isNum(age) && age < FRAME_AGE_WARN_S) tone = "warn";
      const broken = [cam.missing && "missing", cam.failed && "failed", cam.ended && "ended"].filter(Boolean);
      // frozen is a warning only: a camera looking at a still scene also sends identical frames
      const flags = [cam.frozen && "frozen", ...broken].filter(Boolean);
      badge.textContent = isNum(age) ? `frame age ${Math.round(age * 1000)} ms` : "no frame yet";
      if (flags.length) badge.textContent += ` · ${flags.join(", ")}`;
      if (broken.length) tone = "bad";
      else if (cam.frozen && tone === "ok") tone = "warn";
      badge.className = `badge badge-${tone}`;
      setText("cam-fps", fmt(cam.fps, 1));
      setText("cam-frames", String(cam.frames ?? "–"));
      setText("cam-reconnects", String(cam.reconnects ?? "–"));
      setText("cam-health", flags.length ? flags.join(", ") : "ok");
      $("cam-health").className = broken.length ? "bad-text" : flags.length ? "warn-text" : "ok-text";
      const err = $("cam-error");
      err.hidden = !cam.last_error;
      setText("cam-error", cam.last_error ? `last error: ${cam.last_error}` : "");
    }
    setText("svc-viewers", svc ? `${svc.viewers ?? "?"} / ${svc.max_viewers ?? "?"}` : "–");
  }

  function renderAudio(mic, vad) {
    const level = mic?.level_dbfs;
    const frac = isNum(level) ? clamp01((level - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS) : 0;
    const fill = $("mic-fill");
    fill.style.width = `${(frac * 100).toFixed(1)}%`; // CSSOM: allowed by the CSP, unlike style=""
    fill.className = `meter-fill ${isNum(level) && level > -6 ? "meter-hot" : ""}`;
    $("mic-meter").setAttribute("aria-valuenow", isNum(level) ? level.toFixed(0) : String(LEVEL_FLOOR_DBFS));
    setText("mic-level", isNum(level) ? `${level.toFixed(1)} dBFS` : mic ? "silence" : "no mic");
    setText("mic-overflows", String(mic?.input_overflows ?? "–"));
    setText("mic-rate", isNum(mic?.device_rate_hz) ? `${mic.device_rate_hz} Hz` : "–");

    const p = vad?.probability;
    $("vad-fill").style.width = `${(clamp01(isNum(p) ? p : 0) * 100).toFixed(1)}%`;
    $("vad-meter").setAttribute("aria-valuenow", isNum(p) ? p.toFixed(2) : "0");
    setText("vad-prob", isNum(p) ? p.toFixed(2) : "–");
    if (!vad) setPill($("vad-speaking"), "no VAD", "unknown");
    else if (vad.speaking) setPill($("vad-speaking"), "speaking", "info");
    else setPill($("vad-speaking"), "silent", "neutral");
    setText("vad-utterances", String(vad?.utterances ?? "–"));
    setText("vad-short", String(vad?.rejected_short ?? "–"));
    setText("vad-forced", String(vad?.forced_ends ?? "–"));
  }

  let shownDecision = null; // id of the decision on screen
  let shownUtterance = null;

  function renderDecision(d) {
    if (!d || d.id === shownDecision) return;
    shownDecision = d.id;
    setText("dec-intent", d.intent ?? "–");
    setText("dec-confidence", pct(d.confidence));
    setText("dec-verdict", d.accepted ? "acting" : "ignored");
    $("dec-verdict").className = d.accepted ? "ok-text" : "muted";
    const t = d.target_xy;
    setText("dec-target", Array.isArray(t) && t.length === 2 ? `${fmt(t[0])}, ${fmt(t[1])}` : "none");
    setText("dec-presence", isNum(d.presence) ? pct(d.presence) : "–");
    setText("dec-frame", d.frame_seq != null ? `#${d.frame_seq}` : "–");
    if (d.utterance_id != null && d.utterance_id !== shownUtterance) {
      shownUtterance = d.utterance_id;
      const audio = $("utt-audio");
      // preload="none": the clip is fetched only when the operator plays it
      audio.src = `/api/utterance.wav?id=${encodeURIComponent(d.utterance_id)}`;
      audio.hidden = false;
      $("utt-none").hidden = true;
    }
    renderLatency(d.latency_ms || {});
  }

  function renderLatency(lat) {
    const body = $("latency-body");
    const known = LATENCY_STAGES.map(([k]) => k);
    const rows = [...LATENCY_STAGES, ...Object.keys(lat).filter((k) => !known.includes(k)).map((k) => [k, k.replace(/_/g, " ")])]
      .filter(([k]) => k in lat);
    const max = Math.max(1, ...rows.map(([k]) => (isNum(lat[k]) ? lat[k] : 0)));
    body.replaceChildren(
      ...rows.map(([key, label]) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = label;
        const barCell = document.createElement("td");
        barCell.className = "bar-col";
        const bar = document.createElement("div");
        bar.className = `bar ${key === "total" || key === "speech_end_to_decision" ? "bar-total" : ""}`;
        bar.style.width = `${((isNum(lat[key]) ? lat[key] : 0) / max * 100).toFixed(1)}%`;
        barCell.append(bar);
        const num = document.createElement("td");
        num.className = "num";
        num.textContent = fmt(lat[key], 1);
        tr.append(th, barCell, num);
        return tr;
      }),
    );
  }

  const linkStatCells = new Map();

  function renderLinkStats(stats) {
    const dl = $("link-stats");
    if (!stats) {
      if (linkStatCells.size || !dl.childElementCount) {
        linkStatCells.clear();
        dl.replaceChildren(Object.assign(document.createElement("p"), { className: "hint", textContent: "no counters" }));
      }
      return;
    }
    if (!linkStatCells.size) dl.replaceChildren();
    for (const [key, value] of Object.entries(stats)) {
      if (value !== null && typeof value === "object") continue; // flat counters only
      let dd = linkStatCells.get(key);
      if (!dd) {
        const row = document.createElement("div");
        const dt = document.createElement("dt");
        // seconds are shown in ms, so the unit suffix goes from the name
        dt.textContent = (key.endsWith("_s") ? key.slice(0, -2) : key).replace(/_/g, " ");
        dd = document.createElement("dd");
        row.append(dt, dd);
        dl.append(row);
        linkStatCells.set(key, dd);
      }
      let text = String(value);
      if (isNum(value) && key.endsWith("_s")) text = `${(value * 1000).toFixed(1)} ms`;
      else if (isNum(value) && !Number.isInteger(value)) text = value.toFixed(3);
      if (dd.textContent !== text) dd.textContent = text;
    }
  }

  function renderRobot(s) {
    const link = s.link || {};
    const tel = link.telemetry;
    setPill($("pill-link"), link.connected ? "link up" : "link down", link.connected ? "ok" : "bad");
    setText("link-connected", link.connected ? "connected" : "disconnected");
    $("link-connected").className = link.connected ? "ok-text" : "bad-text";

    let state = tel?.state ?? "unknown";
    let tone = STATE_TONE[state] ?? "unknown";
    if (s.estopped && state !== "ESTOP") {
      state = `${state} (e-stop latched)`;
      tone = "bad";
    }
    const reason = tel?.reason && tel.reason !== "NONE" ? ` · ${tel.reason}` : "";
    setPill($("pill-state"), `robot ${state}${reason}`, tone);
    document.body.dataset.robotState = tel?.state ?? "unknown";
    setText("tel-state", state);
    $("tel-state").className = `state-${tone}`;
    setText("tel-reason", tel?.reason ?? "–");
    setText("tel-pose", tel ? `${fmt(tel.x_m)} m, ${fmt(tel.y_m)} m` : "–");
    setText("tel-heading", tel && isNum(tel.theta_rad) ? `${((tel.theta_rad * 180) / Math.PI).toFixed(1)}°` : "–");
    setText("tel-wheels", tel ? `${fmt(tel.wheel_left_m_s)} / ${fmt(tel.wheel_right_m_s)} m/s` : "–");
    setText("tel-battery", tel ? fmt(tel.battery_v, 2, "V") : "–");
    setText("tel-gripper", tel?.gripper ?? "–");
    setText("tel-age", tel && isNum(tel.age_s) ? `${Math.round(tel.age_s * 1000)} ms` : "–");

    const sp = s.setpoint;
    setText("setpoint", sp ? `${fmt(sp.linear_m_s)} m/s, ${fmt(sp.angular_rad_s)} rad/s` : "–");
    const src = s.setpoint_source ?? "–";
    setPill($("pill-source"), `source ${src}`, SOURCE_TONE[src] ?? "neutral");
    const a = s.activity;
    if (a) {
      const parts = [a.mode];
      if (a.intent && a.intent !== "none" && a.intent !== a.mode) parts.push(a.intent);
      if (isNum(a.distance_m)) parts.push(`${a.distance_m.toFixed(2)} m`);
      if (isNum(a.bearing_rad)) parts.push(`${((a.bearing_rad * 180) / Math.PI).toFixed(0)}°`);
      if (a.held) parts.push(`held still: ${a.held}`);
      setText("activity", parts.join(" · "));
    } else setText("activity", "–");
    setText("uptime", isNum(s.uptime_s) ? formatDuration(s.uptime_s) : "–");
    setText("first-motion", isNum(s.first_motion_latency_s) ? `${Math.round(s.first_motion_latency_s * 1000)} ms` : "–");
    renderLinkStats(link.stats);
  }

  function formatDuration(seconds) {
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return `${h ? `${h} h ` : ""}${m} min ${s % 60} s`;
  }

  // One line per active condition (the runtime raises one alert per condition, not one per failure).
  function renderProblems(alerts) {
    const list = $("problems");
    const items = Array.isArray(alerts) ? alerts : [];
    list.replaceChildren(...items.map((a) => {
      const li = document.createElement("li");
      const times = a.count > 1 ? `, ${a.count} times` : "";
      li.textContent = `${a.text} (for ${Math.round(a.for_s)} s${times})`;
      return li;
    }));
    list.hidden = items.length === 0;
  }

  function render(s) {
    if (lastState && isNum(s.uptime_s) && isNum(lastState.uptime_s) && s.uptime_s + 1 < lastState.uptime_s) {
      // The service restarted: event ids start again and the CSRF token in this page is stale.
      lastEventId = 0;
      banner("The robot service restarted: reload the page before sending commands.");
    }
    lastState = s;
    renderProblems(s.alerts);
    renderCamera(s.camera, s.service);
    checkStream(s.service);
    renderLiveMessage();
    renderAudio(s.microphone, s.vad);
    renderDecision(s.decision);
    renderRobot(s);
    const inf = s.inference || {};
    setText("inf-decisions", String(inf.decisions ?? "–"));
    setText("inf-errors", String(inf.errors ?? "–"));
    setText("inf-dropped", String(inf.dropped_utterances ?? "–"));
  }

  async function poll() {
    let next = document.hidden ? POLL_HIDDEN_MS : POLL_MS;
    try {
      const res = await fetchWithTimeout("/api/state", { credentials: "same-origin" });
      if (res.status === 401) {
        setPill($("pill-server"), "token needed", "warn");
        $("pill-server").title = "This robot shows its camera, microphone and state to the operator only: enter the token.";
        setTimeout(poll, POLL_RETRY_MS);
        return;
      }
      if (!res.ok) throw new Error(await errorText(res));
      render(await res.json());
      setPill($("pill-server"), "server ok", "ok");
    } catch (err) {
      setPill($("pill-server"), "server unreachable", "bad");
      $("pill-server").title = err.message;
      next = POLL_RETRY_MS;
    }
    setTimeout(poll, next);
  }

  // -- command log (Server-Sent Events) ----------------------------------------------------------
  let lastEventId = 0;
  let events = null;

  function addLog(ev) {
    const li = document.createElement("li");
    li.className = `log-entry log-${ev.kind}`;
    if (ev.id != null) li.dataset.id = String(ev.id);
    const time = document.createElement("time");
    time.textContent = clockTime(ev.wall);
    if (isNum(ev.wall)) time.dateTime = new Date(ev.wall * 1000).toISOString();
    const kind = document.createElement("span");
    kind.className = "log-kind";
    kind.textContent = ev.kind;
    const text = document.createElement("span");
    text.className = "log-text";
    text.textContent = ev.text ?? "";
    li.append(time, kind, text);
    const log = $("log");
    log.prepend(li);
    while (log.childElementCount > LOG_MAX) log.lastElementChild.remove();
  }

  function onEvent(msg) {
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch (_) {
      return;
    }
    const id = Number(ev.id ?? msg.lastEventId);
    // A reconnect without Last-Event-ID (our own, after a 503) may replay what we already show.
    if (isNum(id) && id <= lastEventId) return;
    if (isNum(id)) lastEventId = id;
    ev.kind = ev.kind || msg.type;
    addLog(ev);
    if (ev.kind === "decision" && ev.data && ev.data.id != null) renderDecision(ev.data);
    if (ev.kind === "alert") banner(`${clockTime(ev.wall)} ${ev.text}`);
  }

  function connectEvents() {
    // after=: our own reconnect has no Last-Event-ID header, so say where we are
    events = new EventSource(lastEventId > 0 ? `/api/events?after=${lastEventId}` : "/api/events");
    setPill($("sse-status"), "connecting", "unknown");
    for (const kind of ["decision", "outcome", "alert", "info", "message"]) events.addEventListener(kind, onEvent);
    events.addEventListener("open", () => setPill($("sse-status"), "live", "ok"));
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) {
        // not retried by the browser (e.g. 503: too many streams): try again later ourselves
        setPill($("sse-status"), "disconnected, retrying", "bad");
        events.close();
        setTimeout(connectEvents, SSE_RETRY_MS);
      } else setPill($("sse-status"), "reconnecting", "warn");
    });
  }
  window.addEventListener("pagehide", () => events?.close());

  // -- bundle metadata -------------------------------------------------------------------------
  const SHOWN_IN_PAGE = new Set(["name", "precision", "backend", "intents"]); // the template shows these
  const isScalar = (v) => v === null || typeof v !== "object" || (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object"));
  const isRecord = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && Object.values(v).every(isScalar);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scalar(value) {
    let text = value === null ? "–" : Array.isArray(value) ? value.join(", ") || "none" : String(value);
    const span = el("span", "mono");
    if (/^[0-9a-f]{32,}$/i.test(text)) {
      span.title = text; // a hash: the start identifies it, the tooltip has it all
      text = `${text.slice(0, 12)}…`;
    } else if (text.length > 40) span.classList.add("wrap");
    span.textContent = text;
    return span;
  }

  function table(rows) {
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    const t = el("table", "mini");
    const head = t.createTHead().insertRow();
    for (const c of cols) head.append(el("th", "", c));
    const body = t.createTBody();
    for (const r of rows) {
      const tr = body.insertRow();
      for (const c of cols) tr.insertCell().append(scalar(r[c] ?? null));
    }
    const wrap = el("div", "table-wrap");
    wrap.append(t);
    return wrap;
  }

  function tree(value, depth = 0) {
    if (isScalar(value)) return scalar(value);
    if (Array.isArray(value) && value.every(isRecord)) return table(value);
    if (depth > 6) return scalar("…");
    const dl = el("dl", "kv kv-small");
    for (const [k, v] of Object.entries(value)) {
      if (depth === 0 && SHOWN_IN_PAGE.has(k)) continue;
      const row = el("div", isScalar(v) ? "" : "nested");
      const dd = el("dd");
      dd.append(tree(v, depth + 1));
      row.append(el("dt", "", Array.isArray(value) ? `#${k}` : k.replace(/_/g, " ")), dd);
      dl.append(row);
    }
    return dl;
  }

  async function loadBundle() {
    const box = $("bundle-tree");
    try {
      const res = await fetchWithTimeout("/api/bundle");
      if (!res.ok) throw new Error(await errorText(res));
      box.replaceChildren(tree(await res.json()));
    } catch (err) {
      box.replaceChildren(Object.assign(document.createElement("p"), { className: "error-text", textContent: `Could not load the bundle: ${err.message}` }));
    }
  }

  // -- start --------------------------------------------------------------------------------------
  renderToken();
  renderDrive();
  startStream();
  connectEvents();
  poll();
  loadBundle();
  if (readAuth && token.get()) openSession(token.get()).catch(() => {});
})();
