// The runs of the tenant, newest first: filters (status, workflow by name or id, time), pages
// through next_cursor, and refreshes itself on the first page.

import { api, isAbort, sleep } from "./api.js";
import { badge, errorBox, fromInputTime, h, inputTime, link, replace, shortId, when, zoneLabel } from "./dom.js";

const STATUSES = ["queued", "running", "paused", "waiting_approval", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 5000;
const PAGE_SIZE = 25;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const WORKFLOW_PAGES = 20; // of 200: a name is looked for among the tenant's first 4000 workflows

/**
 * The saved workflows called `name` exactly (deleted ones too: their runs remain). The API lists
 * workflows without a filter by name, so the tenant's list is read page by page.
 */
async function workflowsNamed(name, signal) {
  const found = [];
  let cursor;
  for (let page = 0; page < WORKFLOW_PAGES; page += 1) {
    const answer = await api("", { query: { include_deleted: "true", limit: 200, cursor }, signal });
    found.push(...(answer.workflows || []).filter((workflow) => workflow.name === name));
    cursor = answer.next_cursor;
    if (!cursor) return { found, complete: true };
  }
  return { found, complete: false };
}

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const query = ctx.query;
  const filters = {
    status: query.getAll("status").filter((s) => STATUSES.includes(s)),
    workflow: query.get("workflow") || query.get("workflow_id") || "",
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
  const workflow = h("input", { type: "text", value: filters.workflow, placeholder: "name or id", "aria-label": "workflow", size: 30 });
  const after = h("input", { type: "datetime-local", value: inputTime(filters.created_after), "aria-label": "created after" });
  const before = h("input", { type: "datetime-local", value: inputTime(filters.created_before), "aria-label": "created before" });
  const zoneText = zoneLabel(new Date());

  function hashFor(next) {
    const search = new URLSearchParams();
    for (const status of next.status) search.append("status", status);
    for (const name of ["workflow", "created_after", "created_before", "cursor"]) {
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
          workflow: workflow.value.trim(),
          created_after: fromInputTime(after.value),
          created_before: fromInputTime(before.value),
        });
      },
    },
    h("fieldset", { class: "statuses" }, h("legend", null, "Status"), statusBoxes),
    h("label", null, "Workflow ", workflow),
    h("label", null, `Created after (${zoneText}) `, after),
    h("label", null, `before (${zoneText}) `, before),
    h("span", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Apply"), h("a", { href: "#/runs", class: "button" }, "Clear")),
  );
  const table = h("div", { class: "card runs-table" }, h("p", { class: "muted" }, "Loading runs…"));
  const pager = h("div", { class: "pager" });
  const resolved = h("p", { class: "muted workflow-resolved", hidden: true });
  replace(main, h("h1", null, "Runs"), form, resolved, table, pager);

  /** The workflow_id to list runs of: the filter itself when it is an id, else the one saved
   * workflow of that name; null (and a message instead of the table) when there is none or several. */
  async function workflowId() {
    const wanted = filters.workflow;
    if (!wanted || UUID.test(wanted)) return wanted;
    const { found, complete } = await workflowsNamed(wanted, signal);
    if (found.length === 1) {
      resolved.hidden = false;
      replace(resolved, `Workflow “${wanted}” is `, h("span", { class: "mono", dataset: { workflowId: found[0].workflow_id } }, found[0].workflow_id), ".");
      return found[0].workflow_id;
    }
    replace(
      table,
      found.length
        ? h(
            "div",
            { class: "workflow-choice" },
            h("p", null, `${found.length} workflows are called “${wanted}”: choose one.`),
            h(
              "ul",
              null,
              found.map((w) =>
                h("li", null, h("a", { class: "mono", href: hashFor({ ...filters, workflow: w.workflow_id, cursor: "" }) }, w.workflow_id), ` v${w.version}, created `, when(w.created_at), w.status === "deleted" ? " (deleted)" : ""),
              ),
            ),
          )
        : h("p", { class: "muted empty" }, complete ? `No saved workflow is called “${wanted}” (runs of a definition sent with the run have no workflow to filter by).` : `No workflow called “${wanted}” among the first ${WORKFLOW_PAGES * 200}: filter by its id.`),
    );
    return null;
  }

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
    let workflowFilter;
    try {
      workflowFilter = await workflowId();
    } catch (error) {
      if (!isAbort(error)) replace(table, errorBox(error));
      return;
    }
    if (workflowFilter === null) return;
    const { status, created_after, created_before } = filters;
    for (;;) {
      try {
        const answer = await api("runs", {
          query: { status, workflow_id: workflowFilter, created_after, created_before, limit: PAGE_SIZE, cursor: cursor || undefined },
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
