// A run's steps as a graph: the routing of its pinned definition (next step, branch paths,
// on_success, on_failure, on_timeout), each step's state derived from the run's events, and
// the path the run took. Drawn as SVG by this module, top to bottom.

import { s, token, duration } from "./dom.js";

export const START = "_start";
export const END = "_end";

const NODE_W = 200;
const NODE_H = 62;
const GAP_X = 36;
const GAP_Y = 54;
const MARGIN = 24;
const LANE = 30; // room beside the steps for each edge that goes back up or skips rows

const SUCCESS_KINDS = ["next", "on_success", "branch_true", "branch_false"];

/** Every routing edge of a definition: {from, to, kind, label}. */
export function routes(definition) {
  const steps = definition.steps || [];
  const known = new Set(steps.map((step) => step.id));
  const edges = [];
  const add = (from, to, kind, label) => {
    if (to === END || known.has(to)) edges.push({ from, to, kind, label });
  };
  if (steps.length) add(START, steps[0].id, "next", "");
  steps.forEach((step, index) => {
    const following = index + 1 < steps.length ? steps[index + 1].id : END;
    const config = step.config || {};
    if (step.type === "branch") {
      // The branch decides; its on_success is not consulted.
      add(step.id, config.true_next, "branch_true", "true");
      add(step.id, config.false_next, "branch_false", "false");
    } else if (step.on_success) {
      add(step.id, step.on_success, "on_success", step.on_success === following ? "" : "on_success");
    } else {
      add(step.id, following, "next", "");
    }
    if (step.on_failure) add(step.id, step.on_failure, "on_failure", "on_failure");
    if (step.on_timeout) add(step.id, step.on_timeout, "on_timeout", "on_timeout");
  });
  return edges;
}

function blank() {
  return {
    status: "pending",
    attempts: 0,
    visits: 0,
    startedAt: null,
    endedAt: null,
    output: undefined,
    error: null,
    approval: null,
    events: [],
  };
}

const ENDED = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Each step's state from the run's events: status (pending, running, retrying, waiting,
 * succeeded, failed, timed_out, stopped), attempts of its latest visit, start and end, output
 * and error; and the visits in order ({step, outcome}; a retry of the run starts a new path).
 */
export function stepStates(events, runStatus) {
  const states = new Map();
  const visits = [];
  const state = (id) => {
    if (!states.has(id)) states.set(id, blank());
    return states.get(id);
  };
  for (const event of events) {
    const payload = event.payload || {};
    if (event.event_type === "run_resumed" && payload.reason === "retry") {
      visits.push({ step: null, outcome: "break" });
      continue;
    }
    const id = event.step_id;
    if (!id) continue;
    const st = state(id);
    st.events.push(event);
    switch (event.event_type) {
      case "step_started": {
        const attempt = Number(payload.attempt) || 1;
        if (attempt === 1 || st.status !== "retrying") {
          st.visits += 1;
          st.startedAt = payload.started_at || event.created_at;
          st.endedAt = null;
          st.error = null;
          visits.push({ step: id, outcome: null });
        }
        st.attempts = attempt;
        st.status = "running";
        break;
      }
      case "step_retrying":
        st.status = "retrying";
        st.error = payload.error || null;
        break;
      case "waiting_approval":
        st.status = "waiting";
        st.approval = payload;
        break;
      case "approval_granted":
        if (st.approval) st.approval = { ...st.approval, granted: payload.approvals };
        break;
      case "step_completed":
      case "step_failed":
      case "step_timeout": {
        const outcome = { step_completed: "success", step_failed: "failure", step_timeout: "timeout" }[event.event_type];
        st.status = { success: "succeeded", failure: "failed", timeout: "timed_out" }[outcome];
        st.endedAt = event.created_at;
        st.output = payload.output;
        st.error = outcome === "success" ? null : payload.error || null;
        const last = [...visits].reverse().find((visit) => visit.step === id);
        if (last && last.outcome === null) last.outcome = outcome;
        break;
      }
      default:
        break;
    }
  }
  if (ENDED.has(runStatus)) {
    for (const st of states.values()) {
      if (["running", "retrying", "waiting"].includes(st.status)) st.status = "stopped";
    }
  }
  return { states, visits };
}

function kindsFor(outcome) {
  if (outcome === "failure") return ["on_failure"];
  if (outcome === "timeout") return ["on_timeout", "on_failure"];
  return SUCCESS_KINDS;
}

/** The edges the run went along: keys "from->to:kind". */
export function takenEdges(edges, visits, runStatus) {
  const taken = new Set();
  const pick = (from, to, outcome) => {
    const between = edges.filter((edge) => edge.from === from && edge.to === to);
    const wanted = kindsFor(outcome);
    const chosen = between.filter((edge) => wanted.includes(edge.kind));
    for (const edge of chosen.length ? chosen : between) taken.add(edgeKey(edge));
  };
  let previous = START;
  let outcome = "success";
  for (const visit of visits) {
    if (visit.outcome === "break") {
      previous = null;
      continue;
    }
    if (previous) pick(previous, visit.step, outcome);
    previous = visit.step;
    outcome = visit.outcome;
  }
  if (previous && previous !== START && runStatus === "succeeded") pick(previous, END, outcome);
  return taken;
}

export function edgeKey(edge) {
  return `${edge.from}->${edge.to}:${edge.kind}`;
}

/** Ranks (rows) by longest path over forward edges; steps nothing reaches sit below the one before. */
function ranks(steps, edges) {
  const index = new Map(steps.map((step, i) => [step.id, i]));
  const rank = new Map([[START, 0]]);
  steps.forEach((step, i) => {
    if (!rank.has(step.id)) rank.set(step.id, i === 0 ? 1 : rank.get(steps[i - 1].id) + 1);
    for (const edge of edges) {
      if (edge.from !== step.id || edge.to === END) continue;
      if (index.get(edge.to) > i) rank.set(edge.to, Math.max(rank.get(edge.to) || 0, rank.get(step.id) + 1));
    }
  });
  const deepest = Math.max(...steps.map((step) => rank.get(step.id)), 0);
  rank.set(END, deepest + 1);
  return rank;
}

function truncate(text, length) {
  const value = String(text);
  return value.length > length ? `${value.slice(0, length - 1)}…` : value;
}

function curve(p0, p1, p2, p3) {
  return `M ${p0[0]} ${p0[1]} C ${p1[0]} ${p1[1]}, ${p2[0]} ${p2[1]}, ${p3[0]} ${p3[1]}`;
}

function midpoint(p0, p1, p2, p3) {
  return [(p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8, (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8];
}

function meta(st, now) {
  if (!st || st.status === "pending") return "pending";
  const parts = [st.status.replace("_", " ")];
  parts.push(`×${st.attempts}`);
  if (st.startedAt) {
    const end = st.endedAt ? Date.parse(st.endedAt) : now;
    parts.push(duration(end - Date.parse(st.startedAt)));
  }
  return parts.join(" · ");
}

/**
 * The SVG of a run's graph. `states` from stepStates; `taken` from takenEdges; `selected` a
 * step id; `onSelect(stepId)` when a step is clicked or chosen with the keyboard.
 */
export function renderGraph(definition, { states, taken, selected, onSelect, now = Date.now() }) {
  const steps = definition.steps || [];
  const edges = routes(definition);
  const rank = ranks(steps, edges);
  const rows = new Map();
  const place = (id) => {
    const r = rank.get(id);
    if (!rows.has(r)) rows.set(r, []);
    rows.get(r).push(id);
  };
  place(START);
  steps.forEach((step) => place(step.id));
  place(END);
  const widest = Math.max(...[...rows.values()].map((row) => row.length));
  const innerWidth = widest * NODE_W + (widest - 1) * GAP_X;
  // Edges that go back up (loops) run in lanes on the right; edges that skip rows run in lanes
  // on the left, so neither crosses the steps in between.
  const span = (edge) => rank.get(edge.to) - rank.get(edge.from);
  const backCount = edges.filter((edge) => span(edge) <= 0).length;
  const longCount = edges.filter((edge) => span(edge) > 1).length;
  const left = MARGIN + (longCount ? (longCount + 1) * LANE : 0);
  const width = left + innerWidth + MARGIN + (backCount ? (backCount + 1) * LANE : 0);
  const height = MARGIN * 2 + (Math.max(...rows.keys()) + 1) * (NODE_H + GAP_Y) - GAP_Y;
  const box = new Map();
  for (const [r, row] of rows) {
    const rowWidth = row.length * NODE_W + (row.length - 1) * GAP_X;
    row.forEach((id, i) => {
      const small = id === START || id === END;
      const w = small ? 84 : NODE_W;
      const hgt = small ? 30 : NODE_H;
      const cellX = left + (innerWidth - rowWidth) / 2 + i * (NODE_W + GAP_X);
      const y = MARGIN + r * (NODE_H + GAP_Y) + (NODE_H - hgt) / 2;
      box.set(id, { x: cellX + (NODE_W - w) / 2, y, w, h: hgt });
    });
  }

  const svg = s("svg", {
    class: "graph",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "the run's steps and routing",
  });
  svg.appendChild(
    s(
      "defs",
      null,
      ["plain", "taken"].map((kind) =>
        s(
          "marker",
          {
            id: `arrow-${kind}`,
            class: `arrow arrow-${kind}`,
            viewBox: "0 0 10 10",
            refX: 9,
            refY: 5,
            markerUnits: "userSpaceOnUse",
            markerWidth: 10,
            markerHeight: 10,
            orient: "auto-start-reverse",
          },
          s("path", { d: "M 0 0 L 10 5 L 0 10 z" }),
        ),
      ),
    ),
  );

  // Edges first, so nodes sit on top of them. Several edges leaving one node fan out.
  const edgeLayer = s("g", { class: "edges" });
  const leaving = new Map();
  let backLane = 0;
  let longLane = 0;
  for (const edge of edges) {
    const from = box.get(edge.from);
    const to = box.get(edge.to);
    if (!from || !to) continue;
    const siblings = edges.filter((other) => other.from === edge.from && span(other) === 1);
    const isTaken = taken.has(edgeKey(edge));
    let points;
    if (span(edge) <= 0) {
      backLane += 1;
      const outX = left + innerWidth + backLane * LANE;
      const a = [from.x + from.w, from.y + from.h / 2];
      const d = [to.x + to.w, to.y + to.h / 2];
      points = [a, [outX, a[1]], [outX, d[1]], d];
    } else if (span(edge) > 1) {
      longLane += 1;
      const outX = left - longLane * LANE;
      const a = [from.x, from.y + from.h / 2];
      const d = [to.x, to.y + to.h / 2];
      points = [a, [outX, a[1]], [outX, d[1]], d];
    } else {
      const order = leaving.get(edge.from) || 0;
      leaving.set(edge.from, order + 1);
      const spread = (order - (siblings.length - 1) / 2) * 22;
      const a = [from.x + from.w / 2 + spread, from.y + from.h];
      const d = [to.x + to.w / 2, to.y];
      const bend = Math.max(24, (d[1] - a[1]) / 2);
      points = [a, [a[0], a[1] + bend], [d[0], d[1] - bend], d];
    }
    const group = s("g", {
      class: ["edge", `edge-${token(edge.kind)}`, isTaken && "taken"],
      dataset: { from: edge.from, to: edge.to, kind: edge.kind },
    });
    group.appendChild(
      s("path", { d: curve(...points), "marker-end": `url(#arrow-${isTaken ? "taken" : "plain"})` }),
    );
    if (edge.label) {
      const [mx, my] = midpoint(...points);
      group.appendChild(s("text", { x: mx + 4, y: my - 4, class: "edge-label" }, edge.label));
    }
    edgeLayer.appendChild(group);
  }
  svg.appendChild(edgeLayer);

  const nodeLayer = s("g", { class: "nodes" });
  for (const id of [START, END]) {
    const b = box.get(id);
    const reached = id === START || [...taken].some((key) => key.includes(`->${END}:`));
    nodeLayer.appendChild(
      s(
        "g",
        { class: ["terminal", reached && "reached"], transform: `translate(${b.x} ${b.y})` },
        s("rect", { width: b.w, height: b.h, rx: b.h / 2 }),
        s("text", { x: b.w / 2, y: b.h / 2 + 4, "text-anchor": "middle" }, id === START ? "start" : "end"),
      ),
    );
  }
  for (const step of steps) {
    const b = box.get(step.id);
    const st = states.get(step.id);
    const status = st ? st.status : "pending";
    const node = s(
      "g",
      {
        class: ["node", `status-${token(status)}`, selected === step.id && "selected"],
        transform: `translate(${b.x} ${b.y})`,
        tabindex: 0,
        role: "button",
        "aria-label": `step ${step.id}: ${status}`,
        dataset: { stepId: step.id, status },
        onclick: () => onSelect && onSelect(step.id),
        onkeydown: (event) => {
          if ((event.key === "Enter" || event.key === " ") && onSelect) {
            event.preventDefault();
            onSelect(step.id);
          }
        },
      },
      s("title", null, `${step.id} (${step.type})${step.name ? ` ${step.name}` : ""}`),
      s("rect", { width: b.w, height: b.h, rx: 8 }),
      s("rect", { class: "node-stripe", width: 6, height: b.h, rx: 3 }),
      s("text", { class: "node-id", x: 16, y: 22 }, truncate(step.id, 20)),
      s("text", { class: "node-type", x: b.w - 10, y: 22, "text-anchor": "end" }, truncate(step.type, 12)),
      s("text", { class: "node-meta", x: 16, y: 46 }, meta(st, now)),
    );
    nodeLayer.appendChild(node);
  }
  svg.appendChild(nodeLayer);
  return svg;
}
