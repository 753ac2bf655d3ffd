// Building the page from data without ever parsing data as HTML: elements are created one by
// one and every string becomes a Text node (textContent), never markup. The page's CSP also
// requires Trusted Types, so handing markup to any HTML sink would throw.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

function apply(element, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name === "style" || name.startsWith("on") || /html/i.test(name)) {
      throw new Error(`refused attribute ${name}`);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
}

/** An HTML element: h("a", {href: "#/runs", class: "x", onclick: f}, "text", child, ...) */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  apply(element, props);
  append(element, children);
  return element;
}

/** An SVG element, the same way. */
export function s(tag, props, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  apply(element, props);
  append(element, children);
  return element;
}

export function replace(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
  return parent;
}

/** A value as indented JSON text. */
export function json(value, extra) {
  return h("pre", { class: ["json", extra] }, JSON.stringify(value, null, 2));
}

/** A class-name-safe token from a server value (status names). */
export function token(value) {
  return String(value || "unknown").toLowerCase().replace(/[^a-z0-9_-]/g, "_");
}

export function badge(status) {
  return h("span", { class: `badge status-${token(status)}`, dataset: { status: String(status) } }, String(status));
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

// Times are shown in UTC, as the command-line client prints them, unless the person chose their
// browser's zone; the choice lasts as long as the tab (sessionStorage). Every time says its zone.
const ZONE_KEY = "workflows.console.zone";

/** "utc" or "local". */
export function zone() {
  try {
    return sessionStorage.getItem(ZONE_KEY) === "local" ? "local" : "utc";
  } catch {
    return "utc";
  }
}

export function setZone(value) {
  sessionStorage.setItem(ZONE_KEY, value === "local" ? "local" : "utc");
}

/** The browser's IANA time zone, for saying which "local" is meant. */
export function localZoneName() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

/** The zone of a moment as shown: "UTC", or the local offset at that moment ("UTC+05:30"). */
export function zoneLabel(date) {
  if (zone() === "utc") return "UTC";
  const minutes = -date.getTimezoneOffset();
  const abs = Math.abs(minutes);
  return `UTC${minutes < 0 ? "-" : "+"}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** A date's wall clock in the chosen zone: [year, month, day, hours, minutes, seconds]. */
function wallClock(date) {
  return zone() === "utc"
    ? [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds()]
    : [date.getFullYear(), date.getMonth() + 1, date.getDate(), date.getHours(), date.getMinutes(), date.getSeconds()];
}

/** A timestamp in the chosen zone, to the second, followed by that zone; the ISO text is its tooltip. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "-");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h("span", null, String(iso));
  const [y, mo, d, hh, mi, ss] = wallClock(date);
  const text = `${y}-${pad(mo)}-${pad(d)} ${pad(hh)}:${pad(mi)}:${pad(ss)} ${zoneLabel(date)}`;
  const title = zone() === "utc" ? iso : `${iso} (${localZoneName()})`;
  return h("time", { datetime: iso, title, dataset: { zone: zone() } }, text);
}

/** An ISO time as the value of an <input type="datetime-local">, in the chosen zone. */
export function inputTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const [y, mo, d, hh, mi] = wallClock(date);
  return `${y}-${pad(mo)}-${pad(d)}T${pad(hh)}:${pad(mi)}`;
}

/** The ISO time an <input type="datetime-local"> names, read in the chosen zone ("" if none). */
export function fromInputTime(value) {
  if (!value) return "";
  const date = new Date(zone() === "utc" ? `${value}Z` : value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "-";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function bytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "-";
}

/** A link inside the console (hash routing); parts are path-encoded. */
export function link(text, ...parts) {
  return h("a", { href: `#/${parts.map((p) => encodeURIComponent(p)).join("/")}` }, text);
}

/** A short-lived message in the page's notice area. */
export function notify(text, kind = "info") {
  const area = document.getElementById("notice");
  if (!area) return;
  replace(area, h("span", { class: `notice-${token(kind)}` }, text));
  area.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => {
    area.hidden = true;
  }, kind === "error" ? 10000 : 5000);
}

export function errorBox(error) {
  const code = error && error.code ? error.code : "error";
  const message = error && error.message ? error.message : String(error);
  return h("div", { class: "error-box", role: "alert" }, h("strong", null, code), ": ", message);
}

/** A button that asks for a second click within a few seconds before it acts. */
export function confirmButton(label, confirmLabel, action, props = {}) {
  let armed = null;
  const button = h("button", {
    type: "button",
    ...props,
    onclick: async () => {
      if (!armed) {
        button.textContent = confirmLabel;
        button.classList.add("armed");
        armed = setTimeout(() => {
          armed = null;
          button.textContent = label;
          button.classList.remove("armed");
        }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      button.classList.remove("armed");
      await action();
    },
  }, label);
  return button;
}

/** An approve/reject body from its comment and fields boxes, or null (and a notice) when the
 * fields are not a JSON object. */
export function decisionBody(commentBox, fieldsBox) {
  let fields = {};
  if (fieldsBox.value.trim()) {
    try {
      fields = JSON.parse(fieldsBox.value);
    } catch {
      notify("fields: not JSON", "error");
      return null;
    }
    if (!fields || typeof fields !== "object" || Array.isArray(fields)) {
      notify("fields: must be a JSON object", "error");
      return null;
    }
  }
  const body = { fields };
  if (commentBox.value.trim()) body.comment = commentBox.value;
  return body;
}
