// The runs of the tenant, newest first: filters (status, workflow, time), pages through
// next_cursor, and refreshes itself on the first page.

import { api, isAbort, sleep } from "./api.js";
import { badge, errorBox, h, link, replace, shortId, when } from "./dom.js";

const STATUSES = ["queued", "running", "paused", "waiting_approval", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 5000;
const PAGE_SIZE = 25;

function localInput(iso) {
  // <input type="datetime-local"> speaks the browser's local time without a zone.
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

function fromLocal(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const query = ctx.query;
  const filters = {
    status: query.getAll("status").filter((s) => STATUSES.includes(s)),
    workflow_id: query.get("workflow_id") || "",
    created_after: query.get("created_after") || "",
    created_before: query.get("created_before") || "",
  };
  const cursor = query.get("cursor") || "";

  const statusBoxes = STATUSES.map((status) =>
    h(
      "label",
      { class: "check" },
      h("input", { type: "checkbox", value: status, checked: filters.status.includes(status) }),
      " ",
      status.replace("_", " "),
    ),
  );
  const workflow = h("input", { type: "text", value: filters.workflow_id, placeholder: "workflow id (UUID)", "aria-label": "workflow id", size: 38, class: "mono" });
  const after = h("input", { type: "datetime-local", value: localInput(filters.created_after), "aria-label": "created after" });
  const before = h("input", { type: "datetime-local", value: localInput(filters.created_before), "aria-label": "created before" });

  function hashFor(next) {
    const search = new URLSearchParams();
    for (const status of next.status) search.append("status", status);
    for (const name of ["workflow_id", "created_after", "created_before", "cursor"]) {
      if (next[name]) search.set(name, next[name]);
    }
    const text = search.toString();
    return `#/runs${text ? `?${text}` : ""}`;
  }

  const form = h(
    "form",
    {
      class: "filters card",
      onsubmit: (event) => {
        event.preventDefault();
        location.hash = hashFor({
          status: statusBoxes.map((label) => label.firstChild).filter((box) => box.checked).map((box) => box.value),
          workflow_id: workflow.value.trim(),
          created_after: fromLocal(after.value),
          created_before: fromLocal(before.value),
        });
      },
    },
    h("fieldset", { class: "statuses" }, h("legend", null, "Status"), statusBoxes),
    h("label", null, "Workflow ", workflow),
    h("label", null, "Created after ", after),
    h("label", null, "before ", before),
    h("span", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Apply"), h("a", { href: "#/runs", class: "button" }, "Clear")),
  );
  const table = h("div", { class: "card runs-table" }, h("p", { class: "muted" }, "Loading runs…"));
  const pager = h("div", { class: "pager" });
  replace(main, h("h1", null, "Runs"), form, table, pager);

  function draw(answer) {
    const runs = answer.runs || [];
    replace(
      table,
      runs.length
        ? h(
            "table",
            { class: "table runs" },
            h("thead", null, h("tr", null, ["created", "run", "workflow", "status", "current step", "owner", "updated"].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              runs.map((run) =>
                h(
                  "tr",
                  { dataset: { runId: run.run_id, status: run.status } },
                  h("td", null, when(run.created_at)),
                  h("td", { class: "mono nowrap" }, link(shortId(run.run_id), "runs", run.run_id)),
                  h("td", null, link(run.definition_name, "runs", run.run_id), h("span", { class: "muted" }, ` v${run.definition_version}`)),
                  h("td", null, badge(run.status)),
                  h("td", { class: "mono" }, run.current_step_id || ""),
                  h("td", null, run.owner_id),
                  h("td", null, when(run.updated_at)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted empty" }, "No runs match."),
    );
    replace(
      pager,
      cursor ? h("a", { class: "button", href: hashFor({ ...filters, cursor: "" }) }, "First page") : null,
      answer.next_cursor ? h("a", { class: "button", href: hashFor({ ...filters, cursor: answer.next_cursor }), rel: "next" }, "Older runs") : null,
    );
  }

  (async () => {
    for (;;) {
      try {
        const answer = await api("runs", {
          query: { ...filters, limit: PAGE_SIZE, cursor: cursor || undefined },
          signal,
        });
        draw(answer);
      } catch (error) {
        if (isAbort(error)) return;
        replace(table, errorBox(error));
      }
      if (cursor) return; // a later page stays as it was read
      try {
        await sleep(REFRESH_MS, signal);
      } catch {
        return;
      }
    }
  })();

  return () => controller.abort();
}
