// The console's shell: sign-in, the caller's permissions (GET /me), navigation and hash routes.

import { api, credential, isAbort, signIn, signOut } from "./api.js";
import { errorBox, h, localZoneName, replace, setZone, zone } from "./dom.js";
import * as approvalsPage from "./page-approvals.js";
import * as runPage from "./page-run.js";
import * as runsPage from "./page-runs.js";
import * as schedulesPage from "./page-schedules.js";
import * as webhooksPage from "./page-webhooks.js";

const READ = "workflows.runs.read";
const CONTROL = "workflows.runs.control";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

let me = null;
let leave = null; // the current page's clean-up (stops its polling)

const can = (permission) => Boolean(me && me.permissions.includes(permission));

// Sections, each shown only to callers whose permissions let them read it.
const SECTIONS = [
  { path: "runs", label: "Runs", page: runsPage, shown: () => true },
  { path: "approvals", label: "Approvals", page: approvalsPage, shown: () => true },
  { path: "webhooks", label: "Webhook DLQ", page: webhooksPage, shown: () => can(CONTROL) },
  { path: "schedules", label: "Schedules", page: schedulesPage, shown: () => can(READ) },
];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { parts, query: new URLSearchParams(search || "") };
}

function drawShell() {
  const { parts } = parseHash();
  const current = parts[0] || "runs";
  replace(
    nav,
    SECTIONS.filter((section) => section.shown()).map((section) =>
      h("a", { href: `#/${section.path}`, class: section.path === current ? "active" : null, "aria-current": section.path === current ? "page" : null }, section.label),
    ),
  );
  const utc = zone() === "utc";
  replace(
    who,
    h(
      "button",
      {
        type: "button",
        class: "link zone-toggle",
        "data-zone": zone(),
        title: utc ? `Show times in this browser's zone (${localZoneName()})` : "Show times in UTC",
        onclick: () => {
          setZone(utc ? "local" : "utc");
          route();
        },
      },
      utc ? "Times: UTC" : `Times: ${localZoneName()}`,
    ),
    " ",
    h("span", { class: "identity", title: me.permissions.join(", ") }, `${me.tenant_id} / ${me.user_id}`),
    me.roles.length ? h("span", { class: "roles muted" }, ` (${me.roles.join(", ")})`) : null,
    " ",
    h("button", { type: "button", class: "link sign-out", onclick: () => leaveConsole("Signed out.") }, "Sign out"),
  );
}

function route() {
  if (!me) return;
  if (leave) leave();
  leave = null;
  drawShell();
  const { parts, query } = parseHash();
  const section = SECTIONS.find((candidate) => candidate.path === (parts[0] || "runs"));
  const ctx = { me, can, query };
  if (!section) {
    replace(main, h("h1", null, "Not found"), h("p", null, "No such page. ", h("a", { href: "#/runs" }, "Runs")));
    return;
  }
  if (!section.shown()) {
    replace(main, h("h1", null, section.label), h("p", { class: "muted" }, "Your permissions do not include this page."));
    return;
  }
  window.scrollTo(0, 0);
  if (section.path === "runs" && parts[1]) leave = runPage.render(main, parts.slice(1), ctx);
  else leave = section.page.render(main, parts.slice(1), ctx);
}

function drawSignIn(message) {
  if (leave) leave();
  leave = null;
  me = null;
  replace(nav);
  replace(who);
  const kind = h(
    "select",
    { id: "credential-kind", "aria-label": "credential kind" },
    h("option", { value: "key" }, "API key (X-API-KEY)"),
    h("option", { value: "bearer" }, "Bearer token (JWT)"),
  );
  const secret = h("input", { id: "credential", type: "password", autocomplete: "off", spellcheck: "false", required: true, "aria-label": "credential" });
  const status = h("div", { class: "sign-in-status", role: "alert" }, message ? errorBox({ code: "signed out", message }) : null);
  const form = h(
    "form",
    {
      class: "card sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        const value = secret.value.trim();
        if (!value) return;
        signIn(kind.value, value);
        secret.value = "";
        replace(status, h("p", { class: "muted" }, "Checking…"));
        await start();
      },
    },
    h("h1", null, "Sign in"),
    h("p", { class: "muted" }, "The console calls this service's API with your credential. It is kept for this browser tab only (sessionStorage) and cleared when you sign out."),
    h("label", { for: "credential-kind" }, "Credential"),
    kind,
    h("label", { for: "credential" }, "Key or token"),
    secret,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
    status,
  );
  replace(main, form);
  secret.focus();
}

function leaveConsole(message) {
  signOut();
  drawSignIn(message);
}

async function start() {
  if (!credential()) {
    drawSignIn();
    return;
  }
  try {
    me = await api("me");
  } catch (error) {
    if (isAbort(error)) return;
    signOut();
    drawSignIn(error.status === 401 ? `The credential was refused: ${error.message}` : `${error.code}: ${error.message}`);
    return;
  }
  route();
}

window.addEventListener("hashchange", route);
window.addEventListener("console:unauthenticated", (event) => {
  if (me) leaveConsole(`The credential was refused: ${event.detail.message}`);
});

start();
