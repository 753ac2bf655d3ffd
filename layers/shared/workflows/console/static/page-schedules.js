// Schedules of saved workflows, with their next and last fire.

import { api, isAbort } from "./api.js";
import { errorBox, h, link, replace, shortId, when } from "./dom.js";

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const cursor = ctx.query.get("cursor") || "";
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

  async function load() {
    const answer = await api("schedules", { query: { cursor: cursor || undefined }, signal });
    const items = answer.schedules || [];
    replace(
      table,
      items.length
        ? h(
            "table",
            { class: "table schedules" },
            h("thead", null, h("tr", null, ["schedule", "workflow", "expression", "time zone", "version", "enabled", "next fire", "last fire"].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              items.map((item) =>
                h(
                  "tr",
                  { dataset: { scheduleId: item.schedule_id } },
                  h("td", { class: "mono" }, shortId(item.schedule_id)),
                  h("td", { class: "mono" }, item.workflow_id),
                  h("td", { class: "mono" }, item.expression),
                  h("td", null, item.timezone),
                  h("td", null, item.version === null ? "latest" : String(item.version)),
                  h("td", null, item.enabled ? "yes" : "no"),
                  h("td", null, when(item.next_fire_at)),
                  h("td", { class: "last-fire" }, lastFire(item.last_fire)),
                ),
              ),
            ),
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
