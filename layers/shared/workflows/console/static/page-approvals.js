// The approvals inbox: what waits for a decision the caller may take, oldest request first,
// with what each is for (instructions, step, workflow, the run's inputs), who approved so far,
// and approve and reject.

import { api, isAbort, sleep } from "./api.js";
import { decisionBody, errorBox, h, json, link, notify, replace, shortId, when } from "./dom.js";

const REFRESH_MS = 10000;
// The inbox's query, the same as `workflows approvals ls` sends: what the caller may decide
// (docs/approvals.md).
export const INBOX_QUERY = { status: "pending", assignee: "me" };

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const list = h("div", { class: "approvals-list" }, h("p", { class: "muted" }, "Loading approvals…"));
  const pager = h("div", { class: "pager" });
  let cursor = ctx.query.get("cursor") || "";
  const inputs = new Map(); // run id -> its inputs (they never change), or the error reading them
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
    const required = item.required_approvals ?? 1;
    // Approved by the caller, short of the quorum: an approver may still reject, not approve twice.
    const mine = grants.some((grant) => grant.approver === ctx.me.user_id);
    const facts = [
      ["workflow", [item.definition_name, " ", h("span", { class: "muted mono" }, item.workflow_id || "ad hoc")]],
      ["step", h("span", { class: "mono" }, item.step_id)],
      ["run", link(shortId(item.run_id), "runs", item.run_id)],
      ["approvals", [`${grants.length} of ${required}`, grants.length ? ` (${grants.map((g) => g.approver).join(", ")})` : ""]],
      ["assignees", item.assignees && item.assignees.length ? item.assignees.join(", ") : "any operator"],
      ["requested", when(item.requested_at)],
      ["times out", when(item.expires_at)],
    ];
    const inputsBox = h("div", { class: "approval-inputs" });
    drawInputs(inputsBox, item.run_id);
    return h(
      "article",
      { class: ["card approval", mine && "decided"], dataset: { runId: item.run_id, stepId: item.step_id, decided: mine ? "approved" : "" } },
      h("h2", null, link(item.definition_name, "runs", item.run_id), " ", h("span", { class: "muted mono" }, item.step_id)),
      h("p", { class: "instructions" }, item.instructions || "Waits for a decision."),
      mine ? h("p", { class: "yours" }, `You approved: waiting for ${required - grants.length} more of ${required}.`) : null,
      h("dl", { class: "facts" }, facts.map(([label, value]) => [h("dt", null, label), h("dd", null, value)])),
      h("h3", { class: "inputs-label" }, "Run inputs"),
      inputsBox,
      h(
        "div",
        { class: "decide" },
        comment,
        fields,
        h(
          "div",
          { class: "buttons" },
          mine ? null : h("button", { type: "button", class: "primary", "data-action": "approve", onclick: () => decide(item, "approve", comment, fields) }, "Approve"),
          h("button", { type: "button", class: "danger", "data-action": "reject", onclick: () => decide(item, "reject", comment, fields) }, "Reject"),
        ),
      ),
    );
  }

  function drawInputs(box, runId) {
    const known = inputs.get(runId);
    if (known === undefined) {
      replace(box, h("p", { class: "muted" }, "loading…"));
      return;
    }
    // An assignee may decide without the permission to read the run (docs/approvals.md).
    replace(box, known instanceof Error ? h("p", { class: "muted" }, `not shown: ${known.message}`) : json(known, "run-inputs"));
  }

  async function loadInputs(items) {
    const missing = [...new Set(items.map((item) => item.run_id))].filter((runId) => !inputs.has(runId));
    await Promise.all(
      missing.map(async (runId) => {
        try {
          inputs.set(runId, (await api(`runs/${encodeURIComponent(runId)}`, { signal })).inputs);
        } catch (error) {
          if (isAbort(error)) throw error;
          inputs.set(runId, error);
        }
      }),
    );
    for (const box of list.querySelectorAll("article.approval")) {
      drawInputs(box.querySelector(".approval-inputs"), box.dataset.runId);
    }
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
    const answer = await api("approvals", { query: { ...INBOX_QUERY, cursor: cursor || undefined }, signal });
    const items = answer.approvals || [];
    replace(list, items.length ? items.map(card) : h("p", { class: "muted empty" }, "Nothing waits for you."));
    replace(
      pager,
      cursor ? h("button", { type: "button", onclick: () => { cursor = ""; load().catch(() => {}); } }, "First page") : null,
      answer.next_cursor ? h("button", { type: "button", onclick: () => { cursor = answer.next_cursor; load().catch(() => {}); } }, "More") : null,
    );
    await loadInputs(items);
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
