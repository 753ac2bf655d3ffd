// The approvals inbox: what waits for a decision the caller may take, oldest request first,
// with approve and reject.

import { api, isAbort, sleep } from "./api.js";
import { decisionBody, errorBox, h, link, notify, replace, shortId, when } from "./dom.js";

const REFRESH_MS = 10000;

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const list = h("div", { class: "approvals-list" }, h("p", { class: "muted" }, "Loading approvals…"));
  const pager = h("div", { class: "pager" });
  let cursor = ctx.query.get("cursor") || "";
  replace(
    main,
    h("h1", null, "Approvals"),
    h("p", { class: "muted" }, "Waiting for a decision you may take, oldest request first."),
    list,
    pager,
  );

  function card(item) {
    const comment = h("textarea", { rows: 2, placeholder: "comment (optional)", "aria-label": "comment", maxlength: 4000 });
    const fields = h("textarea", { rows: 2, placeholder: "fields: optional JSON object", "aria-label": "fields (JSON)", class: "mono" });
    const grants = item.approvals || [];
    return h(
      "article",
      { class: "card approval", dataset: { runId: item.run_id, stepId: item.step_id } },
      h(
        "h2",
        null,
        link(item.definition_name, "runs", item.run_id),
        " ",
        h("span", { class: "muted mono" }, `${shortId(item.run_id)} · ${item.step_id}`),
      ),
      h("p", { class: "instructions" }, item.instructions || "Waits for a decision."),
      h(
        "dl",
        { class: "facts" },
        h("dt", null, "approvals"),
        h("dd", null, `${grants.length} of ${item.required_approvals}`, grants.length ? ` (${grants.map((g) => g.approver).join(", ")})` : ""),
        h("dt", null, "assignees"),
        h("dd", null, item.assignees && item.assignees.length ? item.assignees.join(", ") : "any operator"),
        h("dt", null, "requested"),
        h("dd", null, when(item.requested_at)),
        h("dt", null, "expires"),
        h("dd", null, when(item.expires_at)),
      ),
      h(
        "div",
        { class: "decide" },
        comment,
        fields,
        h(
          "div",
          { class: "buttons" },
          h("button", { type: "button", class: "primary", "data-action": "approve", onclick: () => decide(item, "approve", comment, fields) }, "Approve"),
          h("button", { type: "button", class: "danger", "data-action": "reject", onclick: () => decide(item, "reject", comment, fields) }, "Reject"),
        ),
      ),
    );
  }

  async function decide(item, decision, commentBox, fieldsBox) {
    const body = decisionBody(commentBox, fieldsBox);
    if (!body) return;
    const path = `runs/${encodeURIComponent(item.run_id)}/steps/${encodeURIComponent(item.step_id)}/${decision}`;
    try {
      const result = await api(path, { method: "POST", body, signal });
      notify(`${decision}: ${result.result}; the run is ${result.status}`);
      await load();
    } catch (error) {
      if (!isAbort(error)) notify(`${decision} refused (${error.code}): ${error.message}`, "error");
    }
  }

  async function load() {
    const answer = await api("approvals", {
      query: { status: "pending", assignee: "me", cursor: cursor || undefined },
      signal,
    });
    const items = answer.approvals || [];
    replace(list, items.length ? items.map(card) : h("p", { class: "muted empty" }, "Nothing waits for you."));
    replace(
      pager,
      cursor ? h("button", { type: "button", onclick: () => { cursor = ""; load().catch(() => {}); } }, "First page") : null,
      answer.next_cursor ? h("button", { type: "button", onclick: () => { cursor = answer.next_cursor; load().catch(() => {}); } }, "More") : null,
    );
  }

  (async () => {
    for (;;) {
      // Redrawing would wipe a comment being typed: refresh only while no box has text.
      const typing = [...list.querySelectorAll("textarea")].some((box) => box.value);
      if (!typing) {
        try {
          await load();
        } catch (error) {
          if (isAbort(error)) return;
          replace(list, errorBox(error));
        }
      }
      try {
        await sleep(REFRESH_MS, signal);
      } catch {
        return;
      }
    }
  })();

  return () => controller.abort();
}
