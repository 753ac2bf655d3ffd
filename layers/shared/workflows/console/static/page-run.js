// One run: its graph, its steps' states, inputs, outputs and artifacts, the control actions its
// state allows, and its events, followed live through the long-polled events route.

import { api, apiBlob, isAbort, sleep } from "./api.js";
import { badge, bytes, confirmButton, decisionBody, duration, errorBox, h, json, link, notify, replace, shortId, when } from "./dom.js";
import { renderGraph, routes, stepStates, stepStatus, takenEdges } from "./graph.js";

const READ = "workflows.runs.read";
const CONTROL = "workflows.runs.control";
const ENDED = new Set(["succeeded", "failed", "cancelled"]);
const WAIT_SECONDS = 20; // below the service's bound (25 s) and API Gateway's 30 s
const MIN_INTERVAL_MS = 1000; // between two event requests, however fast they answer
const ENDED_INTERVAL_MS = 10000; // an ended run may still be retried by someone else
const PAGE = 500;
const DIRECT_DOWNLOAD_BYTES = 10 * 1024 * 1024; // larger artifacts answer 303 to S3

// Each step type's config fields naming where its steps go next (`routes` of GET /step-types:
// a branch's targets), for the graph. The same for the whole visit, so read once; any caller
// may list the step types.
let routeFieldsByType = null;

async function routeFields(signal) {
  if (!routeFieldsByType) {
    const listing = await api("step-types", { signal });
    routeFieldsByType = new Map(listing.step_types.map((type) => [type.name, type.routes || []]));
  }
  return routeFieldsByType;
}

// Which actions each status allows (docs/engine.md, "Control actions").
const ACTIONS = {
  queued: ["pause", "cancel"],
  running: ["pause", "cancel"],
  waiting_approval: ["pause", "cancel"],
  paused: ["resume", "cancel"],
  failed: ["retry"],
  succeeded: [],
  cancelled: [],
};

function clip(text, length = 240) {
  const value = String(text ?? "");
  return value.length > length ? `${value.slice(0, length - 1)}…` : value;
}

function describeError(error) {
  if (!error) return "";
  if (typeof error !== "object") return String(error);
  return `${error.code || "error"}: ${error.message || ""}`;
}

/** One line on an event, from its payload. */
export function summary(event) {
  const p = event.payload || {};
  switch (event.event_type) {
    case "run_started":
      return "";
    case "step_started":
      return `${p.step_type || "step"}, attempt ${p.attempt ?? 1}`;
    case "step_completed":
      return `attempt ${p.attempt ?? 1}`;
    case "step_retrying":
      return `${describeError(p.error)}; attempt ${p.next_attempt} in ${duration((p.delay_seconds || 0) * 1000)}`;
    case "waiting_approval":
      return `${p.instructions || "waits for a decision"} (needs ${p.required_approvals ?? 1})`;
    case "waiting_signal": {
      const names = (p.signals || []).map((awaited) => awaited.name).join(", ");
      return `${p.mode === "all" ? "all of: " : ""}${names}${p.timeout_at ? ` until ${p.timeout_at}` : ""}`;
    }
    case "signal_received":
      return `${p.name} (id ${p.id})`;
    case "approval_granted":
      return `approved by ${p.approver} (${p.approvals ?? 1}/${p.required_approvals ?? 1})${p.comment ? `: ${p.comment}` : ""}`;
    case "approval_rejected":
      return `rejected by ${p.approver}${p.comment ? `: ${p.comment}` : ""}`;
    case "run_paused":
      return `by ${p.actor}`;
    case "run_resumed":
      return p.reason === "retry" ? `retry from ${p.from_step} by ${p.actor}` : `by ${p.actor}`;
    case "cancel_acknowledged":
    case "run_cancelled":
      return p.actor ? `by ${p.actor}` : "";
    case "webhook_delivery":
      return [p.outcome, p.status_code, p.source, p.error].filter((v) => v !== undefined && v !== null).join(" · ");
    default:
      return p.error ? describeError(p.error) : "";
  }
}

/** The run that started this one (a branch, an item, a child workflow), linked. */
function parentOf(run) {
  const where = run.branch ? `branch ${run.branch}` : run.item_index !== null && run.item_index !== undefined ? `item ${run.item_index}` : null;
  return h(
    "span",
    null,
    h("span", { class: "mono" }, link(shortId(run.parent_run_id), "runs", run.parent_run_id)),
    ` step ${run.parent_step_id}`,
    where ? ` (${where})` : "",
  );
}

/** The children the current step waits for: counts by state, and the first failures, each
 * linked to its child run; a branch or item run inside this run (`inline`) has no run of its own,
 * so its failure is plain text. */
function childrenOf(children) {
  const waiting = children.total - children.started;
  const counts = `${children.succeeded} succeeded, ${children.failed} failed, ${children.running} running, ${waiting} not started (of ${children.total})`;
  const inline = children.inline === true;
  const parts = { parallel: "branches", map: "items" }[children.kind] || "children";
  const where = inline ? "run inside this run" : children.kind === "workflow" ? "a child run" : "each a child run";
  return h(
    "div",
    { class: "children", "data-kind": children.kind, "data-inline": String(inline) },
    h("strong", null, `${children.kind} ${children.step_id}: `),
    counts,
    h("span", { class: "children-where muted" }, ` · ${where}`),
    h("progress", { max: String(children.total), value: String(children.succeeded + children.failed), "aria-label": `${parts} ended` }),
    (children.failures || []).length
      ? h(
          "ul",
          { class: "failures" },
          children.failures.map((failure) => {
            const name = failure.branch || `item ${failure.index}`;
            return h(
              "li",
              null,
              failure.run_id ? link(name, "runs", failure.run_id) : h("span", { class: "inline-item" }, name),
              `: ${failure.status}${failure.error ? ` (${failure.error.code})` : ""}`,
            );
          }),
        )
      : null,
  );
}

function field(label, value) {
  return [h("dt", null, label), h("dd", null, value)];
}

export function render(main, params, ctx) {
  const runId = params[0];
  const controller = new AbortController();
  const { signal } = controller;
  let run = null;
  let definition = null;
  let routing = null; // step type -> its route fields; null when the caller may not list them
  let events = [];
  let artifacts = [];
  let since = 0;
  let selected = null;
  let wake = null; // cuts the follower's pause short (after a control action)
  const seen = new Set();

  const header = h("section", { class: "card run-header" });
  const controls = h("section", { class: "controls", "aria-label": "control actions" });
  const approval = h("section", { class: "approval-panel" });
  const graphBox = h("div", { class: "graph-box" });
  const detail = h("section", { class: "card step-detail", "aria-live": "polite" });
  const data = h("section", { class: "card run-data" });
  const artifactBox = h("section", { class: "card artifacts" });
  const live = h("span", { class: "live", "data-state": "connecting" }, "connecting");
  const timeline = h("ol", { class: "timeline", "aria-label": "events" });

  replace(
    main,
    h("nav", { class: "crumbs" }, link("Runs", "runs"), " / ", h("span", { class: "mono" }, shortId(runId))),
    header,
    controls,
    approval,
    h(
      "div",
      { class: "run-body" },
      h("section", { class: "card graph-card" }, h("h2", null, "Steps"), graphBox, legend()),
      detail,
    ),
    data,
    artifactBox,
    h("section", { class: "card events-card" }, h("h2", null, "Events ", live), timeline),
  );

  function legend() {
    return h(
      "p",
      { class: "legend" },
      ["succeeded", "running", "waiting", "retrying", "failed", "timed_out", "stopped", "pending", "not_run"].map((status) =>
        h("span", { class: `legend-item status-${status}` }, h("span", { class: "swatch" }), status.replace("_", " ")),
      ),
      h("span", { class: "legend-item taken-path" }, h("span", { class: "swatch" }), "path taken"),
    );
  }

  function derived() {
    return stepStates(events, run ? run.status : null);
  }

  function drawHeader() {
    replace(
      header,
      h("h1", null, run.definition_name, " ", h("span", { class: "muted" }, `v${run.definition_version}`), " ", badge(run.status)),
      h(
        "dl",
        { class: "facts" },
        field("run", h("span", { class: "mono" }, run.run_id)),
        field("workflow", run.workflow_id ? h("span", { class: "mono" }, run.workflow_id) : "ad hoc"),
        run.schedule_id ? field("schedule", h("span", { class: "mono" }, run.schedule_id)) : null,
        field("owner", run.owner_id),
        field("created", when(run.created_at)),
        field("started", when(run.started_at)),
        field("ended", when(run.ended_at)),
        run.parent_run_id ? field("parent", parentOf(run)) : null,
        field("current step", run.current_step_id || "-"),
        field("steps executed", String(run.usage ? run.usage.steps_executed : "-")),
        run.status_reason ? field("reason", run.status_reason) : null,
      ),
      run.children ? childrenOf(run.children) : null,
      run.error ? h("div", { class: "error-box run-error" }, describeError(run.error)) : null,
    );
  }

  function drawControls() {
    if (!ctx.can(CONTROL)) {
      replace(controls);
      controls.hidden = true;
      return;
    }
    controls.hidden = false;
    const allowed = ACTIONS[run.status] || [];
    const buttons = [];
    if (allowed.includes("pause")) buttons.push(h("button", { type: "button", "data-action": "pause", onclick: () => act("pause") }, "Pause"));
    if (allowed.includes("resume")) buttons.push(h("button", { type: "button", "data-action": "resume", onclick: () => act("resume") }, "Resume"));
    if (allowed.includes("cancel")) {
      buttons.push(confirmButton("Cancel run", "Click again to cancel", () => act("cancel"), { class: "danger", "data-action": "cancel" }));
    }
    if (allowed.includes("retry") && definition) {
      const failedStep = (run.error && run.error.step_id) || run.current_step_id || definition.steps[0].id;
      const choice = h(
        "select",
        { "aria-label": "retry from step", class: "retry-from" },
        definition.steps.map((step) => h("option", { value: step.id, selected: step.id === failedStep }, step.id)),
      );
      buttons.push(
        h(
          "span",
          { class: "retry" },
          h("button", { type: "button", "data-action": "retry", onclick: () => act("retry", { from_step: choice.value }) }, "Retry from"),
          " ",
          choice,
        ),
      );
    }
    replace(controls, buttons.length ? buttons : h("span", { class: "muted" }, `no control action for a ${run.status} run`));
  }

  function drawApproval() {
    replace(approval);
    if (run.status !== "waiting_approval" || !run.current_step_id) return;
    const st = derived().states.get(run.current_step_id);
    const request = st && st.approval;
    if (!request) return;
    const assignees = request.assignees || [];
    const mayDecide = ctx.can(CONTROL) || assignees.includes(ctx.me.user_id);
    // This wait's approvals: those after the step's latest request.
    const asked = st.events.map((event) => event.event_type).lastIndexOf("waiting_approval");
    const mine = st.events
      .slice(asked + 1)
      .some((event) => event.event_type === "approval_granted" && (event.payload || {}).approver === ctx.me.user_id);
    const comment = h("textarea", { rows: 2, placeholder: "comment (optional)", "aria-label": "comment", maxlength: 4000 });
    const fields = h("textarea", { rows: 2, placeholder: '{"fields": "optional JSON object"}', "aria-label": "fields (JSON)", class: "mono" });
    approval.appendChild(
      h(
        "div",
        { class: "card approval" },
        h("h2", null, `Approval: ${run.current_step_id}`),
        h("p", { class: "instructions" }, request.instructions || "Waits for a decision."),
        mine ? h("p", { class: "yours" }, "You approved: waiting for the rest of the quorum.") : null,
        h(
          "p",
          { class: "muted" },
          `${request.granted ?? 0} of ${request.required_approvals ?? 1} approvals`,
          assignees.length ? `; assignees: ${assignees.join(", ")}` : "; any operator may decide",
          request.timeout_at ? "; times out " : "",
          request.timeout_at ? when(request.timeout_at) : null,
        ),
        mayDecide
          ? h(
              "div",
              { class: "decide" },
              comment,
              fields,
              h(
                "div",
                { class: "buttons" },
                mine ? null : h("button", { type: "button", class: "primary", "data-action": "approve", onclick: () => decide("approve", comment, fields) }, "Approve"),
                h("button", { type: "button", class: "danger", "data-action": "reject", onclick: () => decide("reject", comment, fields) }, "Reject"),
              ),
            )
          : h("p", { class: "muted" }, "You may not decide this approval."),
      ),
    );
  }

  function drawGraph() {
    if (!definition) return;
    const { states, visits } = derived();
    const routeFields = routing || new Map();
    const taken = takenEdges(routes(definition, routeFields), visits, run ? run.status : null);
    const ended = Boolean(run && ENDED.has(run.status));
    replace(
      graphBox,
      renderGraph(definition, { routeFields, states, taken, ended, selected, onSelect: select, children: run ? run.children : null }),
    );
    drawDetail(states);
  }

  function select(stepId) {
    selected = selected === stepId ? null : stepId;
    drawGraph();
  }

  function drawDetail(states) {
    if (!selected) {
      replace(detail, h("h2", null, "Step"), h("p", { class: "muted" }, "Choose a step in the graph to see its configuration, output and events."));
      return;
    }
    const step = definition.steps.find((candidate) => candidate.id === selected);
    const st = states.get(selected);
    const ended = st && st.endedAt ? Date.parse(st.endedAt) : Date.now();
    replace(
      detail,
      h("h2", null, "Step ", h("span", { class: "mono" }, step.id), " ", badge(stepStatus(st, ENDED.has(run.status)).replace("_", " "))),
      h(
        "dl",
        { class: "facts" },
        field("type", step.type),
        step.name ? field("name", step.name) : null,
        field("attempts", String(st ? st.attempts : 0)),
        field("visits", String(st ? st.visits : 0)),
        field("started", when(st && st.startedAt)),
        field("duration", st && st.startedAt ? duration(ended - Date.parse(st.startedAt)) : "-"),
      ),
      st && st.error ? h("div", { class: "error-box" }, describeError(st.error)) : null,
      h("h3", null, "Output"),
      st && st.output !== undefined ? json(st.output, "step-output") : h("p", { class: "muted" }, "none yet"),
      h("h3", null, "Configuration"),
      json({ config: step.config, retry: step.retry, timeout_seconds: step.timeout_seconds, on_success: step.on_success, on_failure: step.on_failure, on_timeout: step.on_timeout }),
    );
  }

  function drawData() {
    replace(
      data,
      h(
        "div",
        { class: "columns" },
        h("div", null, h("h2", null, "Inputs"), json(run.inputs, "run-inputs")),
        h(
          "div",
          null,
          h("h2", null, "Outputs"),
          run.outputs === null || run.outputs === undefined ? h("p", { class: "muted" }, "none yet") : json(run.outputs, "run-outputs"),
        ),
      ),
    );
  }

  function drawArtifacts() {
    replace(
      artifactBox,
      h("h2", null, "Artifacts"),
      artifacts.length
        ? h(
            "table",
            { class: "table" },
            h("thead", null, h("tr", null, ["name", "step", "type", "size", "created", ""].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              artifacts.map((artifact) =>
                h(
                  "tr",
                  null,
                  h("td", null, artifact.name),
                  h("td", { class: "mono" }, artifact.step_id || "-"),
                  h("td", null, artifact.mime_type),
                  h("td", null, bytes(artifact.size_bytes)),
                  h("td", null, when(artifact.created_at)),
                  h("td", null, h("button", { type: "button", onclick: () => download(artifact) }, "Download")),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "none"),
    );
  }

  function appendEvents(batch, fresh) {
    for (const event of batch) {
      if (seen.has(event.event_seq)) continue;
      seen.add(event.event_seq);
      const payload = json(event.payload, "event-payload");
      payload.hidden = true;
      const row = h(
        "li",
        { class: ["event", fresh && "fresh"], dataset: { seq: String(event.event_seq), type: event.event_type } },
        h(
          "button",
          { type: "button", class: "event-line", "aria-expanded": "false", onclick: (e) => {
            payload.hidden = !payload.hidden;
            e.currentTarget.setAttribute("aria-expanded", String(!payload.hidden));
          } },
          h("span", { class: "seq" }, `#${event.event_seq}`),
          h("span", { class: "at" }, when(event.created_at)),
          h("span", { class: `etype etype-${event.event_type}` }, event.event_type),
          h("span", { class: "mono step" }, event.step_id || ""),
          h("span", { class: "what" }, clip(summary(event))),
        ),
        payload,
      );
      timeline.appendChild(row);
    }
  }

  async function act(action, body) {
    try {
      const result = await api(`runs/${encodeURIComponent(runId)}/${action}`, { method: "POST", body, signal });
      notify(`${action}: ${result.result}; the run is ${result.status}`);
      await refresh();
      if (wake) wake();
    } catch (error) {
      if (!isAbort(error)) notify(`${action} refused (${error.code}): ${error.message}`, "error");
    }
  }

  async function decide(decision, commentBox, fieldsBox) {
    const body = decisionBody(commentBox, fieldsBox);
    if (!body) return;
    const step = encodeURIComponent(run.current_step_id);
    try {
      const result = await api(`runs/${encodeURIComponent(runId)}/steps/${step}/${decision}`, { method: "POST", body, signal });
      notify(`${decision}: ${result.result}; the run is ${result.status}`);
      await refresh();
      if (wake) wake();
    } catch (error) {
      if (!isAbort(error)) notify(`${decision} refused (${error.code}): ${error.message}`, "error");
    }
  }

  async function download(artifact) {
    const path = `runs/${encodeURIComponent(runId)}/artifacts/${encodeURIComponent(artifact.artifact_id)}`;
    try {
      let href;
      if (artifact.size_bytes > DIRECT_DOWNLOAD_BYTES) {
        const meta = await api(path, { signal });
        if (!/^https?:\/\//.test(meta.download_url)) throw new Error("no download address");
        href = meta.download_url;
      } else {
        href = URL.createObjectURL(await apiBlob(path, { query: { download: "true" }, signal }));
        setTimeout(() => URL.revokeObjectURL(href), 60000);
      }
      const anchor = h("a", { href, download: artifact.name, rel: "noopener noreferrer", hidden: true });
      document.body.appendChild(anchor);
      anchor.click();
      anchor.remove();
    } catch (error) {
      if (!isAbort(error)) notify(`download failed: ${error.message}`, "error");
    }
  }

  async function refresh() {
    run = await api(`runs/${encodeURIComponent(runId)}`, { signal });
    drawHeader();
    drawControls();
    drawApproval();
    drawData();
    drawGraph();
  }

  async function loadArtifacts() {
    const answer = await api(`runs/${encodeURIComponent(runId)}/artifacts`, { signal });
    artifacts = answer.artifacts || [];
    drawArtifacts();
  }

  async function readEvents(wait) {
    const page = await api(`runs/${encodeURIComponent(runId)}/events`, {
      query: { since, limit: PAGE, wait: wait || undefined },
      signal,
    });
    since = page.next_since;
    return page;
  }

  async function follow() {
    while (!signal.aborted) {
      const started = performance.now();
      const ended = ENDED.has(run.status);
      let page;
      if (live.dataset.state !== "error") {
        live.dataset.state = ended ? "ended" : "live";
        live.textContent = ended ? "run ended" : "live";
      }
      try {
        page = await readEvents(ended ? 0 : WAIT_SECONDS);
        live.dataset.state = ended ? "ended" : "live";
        live.textContent = ended ? "run ended" : "live";
      } catch (error) {
        if (isAbort(error)) return;
        live.dataset.state = "error";
        live.textContent = `reconnecting (${error.code || error.message})`;
        await pause(5000);
        continue;
      }
      if (page.events.length) {
        events = events.concat(page.events);
        appendEvents(page.events, true);
        try {
          await refresh();
          if (page.events.some((event) => event.event_type === "step_completed")) await loadArtifacts();
        } catch (error) {
          if (isAbort(error)) return;
        }
      }
      if (page.has_more) continue;
      const gap = (ended ? ENDED_INTERVAL_MS : MIN_INTERVAL_MS) - (performance.now() - started);
      if (gap > 0) await pause(gap);
    }
  }

  async function pause(ms) {
    const cut = new AbortController();
    wake = () => cut.abort();
    const both = AbortSignal.any ? AbortSignal.any([signal, cut.signal]) : cut.signal;
    try {
      await sleep(ms, both);
    } catch {
      // woken early, or the page is gone: the loop checks which
    } finally {
      wake = null;
    }
  }

  (async () => {
    try {
      const [loadedRun, loadedDefinition, loadedRouting] = await Promise.all([
        api(`runs/${encodeURIComponent(runId)}`, { signal }),
        api(`runs/${encodeURIComponent(runId)}/definition`, { signal }),
        routeFields(signal),
      ]);
      run = loadedRun;
      definition = loadedDefinition;
      routing = loadedRouting;
      for (;;) {
        const page = await readEvents(0);
        events = events.concat(page.events);
        if (!page.has_more) break;
      }
      appendEvents(events, false);
      drawHeader();
      drawControls();
      drawApproval();
      drawData();
      drawGraph();
      await loadArtifacts();
      follow();
    } catch (error) {
      if (isAbort(error)) return;
      replace(main, h("nav", { class: "crumbs" }, link("Runs", "runs")), errorBox(error));
    }
  })();

  return () => controller.abort();
}
