// Schedules of saved workflows, with their next and last fire; those who may change schedules
// pause one (nothing fires while it is paused, and it does not catch up) and resume it.

import { api, isAbort } from "./api.js";
import { badge, errorBox, h, link, notify, replace, shortId, when } from "./dom.js";

const CONTROL = "workflows.runs.control";

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const cursor = ctx.query.get("cursor") || "";
  const mayChange = ctx.can(CONTROL);
  const table = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading schedules…"));
  const pager = h("div", { class: "pager" });
  replace(main, h("h1", null, "Schedules"), table, pager);

  function lastFire(fire) {
    if (!fire) return h("span", { class: "muted" }, "never fired");
    return h(
      "span",
      { class: `fire fire-${fire.result === "started" ? "started" : "skipped"}` },
      when(fire.scheduled_time),
      " ",
      fire.result,
      fire.run_id ? [" ", link(shortId(fire.run_id), "runs", fire.run_id)] : null,
      fire.reason ? ` (${fire.reason}${fire.message ? `: ${fire.message}` : ""})` : null,
    );
  }

  async function setEnabled(item, enabled, button) {
    button.disabled = true;
    try {
      await api(`schedules/${encodeURIComponent(item.schedule_id)}`, { method: "PATCH", body: { enabled }, signal });
      notify(`schedule ${shortId(item.schedule_id)} ${enabled ? "resumed" : "paused"}`);
      await load();
    } catch (error) {
      if (isAbort(error)) return;
      button.disabled = false;
      notify(`${enabled ? "resume" : "pause"} refused (${error.code}): ${error.message}`, "error");
    }
  }

  function row(item) {
    const toggle = mayChange
      ? h(
          "button",
          {
            type: "button",
            "data-action": item.enabled ? "pause" : "resume",
            onclick: (event) => setEnabled(item, !item.enabled, event.currentTarget),
          },
          item.enabled ? "Pause" : "Resume",
        )
      : null;
    return h(
      "tr",
      { dataset: { scheduleId: item.schedule_id, enabled: String(item.enabled) } },
      h("td", { class: "mono" }, shortId(item.schedule_id)),
      h("td", { class: "mono" }, item.workflow_id),
      h("td", { class: "mono nowrap" }, item.expression),
      h("td", { class: "nowrap" }, item.timezone),
      h("td", null, item.version === null ? "latest" : String(item.version)),
      h("td", { class: "state" }, badge(item.enabled ? "active" : "paused")),
      h("td", null, item.enabled ? when(item.next_fire_at) : h("span", { class: "muted" }, "none while paused")),
      h("td", { class: "last-fire" }, lastFire(item.last_fire)),
      mayChange ? h("td", { class: "nowrap" }, toggle) : null,
    );
  }

  async function load() {
    const answer = await api("schedules", { query: { cursor: cursor || undefined }, signal });
    const items = answer.schedules || [];
    const columns = ["schedule", "workflow", "expression", "time zone", "version", "state", "next fire", "last fire"];
    replace(
      table,
      items.length
        ? h(
            "table",
            { class: "table schedules" },
            h("thead", null, h("tr", null, columns.concat(mayChange ? [""] : []).map((c) => h("th", null, c)))),
            h("tbody", null, items.map(row)),
          )
        : h("p", { class: "muted empty" }, "No schedules."),
    );
    replace(
      pager,
      cursor ? h("a", { class: "button", href: "#/schedules" }, "First page") : null,
      answer.next_cursor ? h("a", { class: "button", href: `#/schedules?cursor=${encodeURIComponent(answer.next_cursor)}` }, "More") : null,
    );
  }

  load().catch((error) => {
    if (!isAbort(error)) replace(table, errorBox(error));
  });
  return () => controller.abort();
}
