// A run's steps as a graph: the routing of its pinned definition (next step, the targets a step
// type names in its config, such as a branch's, on_success, on_failure, on_timeout), each step's
// state derived from the run's events, and the path the run took. Drawn as SVG by this module,
// top to bottom, with no edge crossing a step. A parallel's branches, and a map's steps, are drawn
// inside its step as small lanes.

import { s, token, duration } from "./dom.js";

export const START = "_start";
export const END = "_end";

const NODE_W = 200;
const NODE_H = 62;
const TERM_W = 84;
const TERM_H = 30;
const GAP_X = 36;
const GAP_Y = 58;
const MARGIN = 24;
const LANE_W = 12; // the room an edge takes where it passes a row of steps
// A parallel's branches and a map's steps inside its step: a lane each, its steps side by side.
const INNER_H = 28; // a lane's height
const INNER_LABEL_W = 76; // its name (the branch, or "× N items")
const INNER_STEP_W = 84;
const INNER_STEP_H = 20;
const INNER_GAP = 14; // between two steps of a lane
const INNER_PAD = 10;
const INNER_LANES = 8; // lanes drawn; more are counted
const INNER_STEPS = 4; // steps drawn per lane; more are counted

const SUCCESS_KINDS = ["next", "on_success", "route"];

/** An edge's label for a config field that routes: `true_next` reads "true". */
function routeLabel(field) {
  return field.replace(/_next$/, "");
}

/**
 * Every routing edge of a definition: {from, to, kind, label}. `routeFields` (a Map) gives a step
 * type's config fields naming where its steps go when they succeed (`routes` of
 * GET /step-types: a branch's `true_next` and `false_next`); such a step's on_success is not
 * consulted.
 */
export function routes(definition, routeFields = new Map()) {
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
    const fields = routeFields.get(step.type) || [];
    if (fields.length) {
      // The step decides among the targets its config names; its on_success is not consulted.
      for (const field of fields) add(step.id, config[field], "route", routeLabel(field));
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
      case "waiting_signal":
        st.status = "waiting";
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

/**
 * The lanes drawn inside a step: a parallel's branches ({label: its name, steps}), or a map's
 * steps once, labelled with how many items run them (`items`: a number, or null when not known
 * yet); none for other steps.
 */
export function innerLanes(step, items = null) {
  const { branches, steps } = step.config || {};
  if (step.type === "parallel" && branches && typeof branches === "object") {
    return Object.entries(branches).map(([name, inner]) => ({ kind: "parallel", label: name, steps: Array.isArray(inner) ? inner : [] }));
  }
  if (step.type === "map" && Array.isArray(steps)) {
    const label = items === null ? "× each item" : `× ${items} item${items === 1 ? "" : "s"}`;
    return [{ kind: "map", label, steps }];
  }
  return [];
}

/** How many items a map runs: its literal list, else what the run says (its children, or the
 * step's output once it ended); null while not known. */
function itemCount(step, children, st) {
  const items = (step.config || {}).items;
  if (Array.isArray(items)) return items.length;
  if (children && children.step_id === step.id && Number.isInteger(children.total)) return children.total;
  if (st && Array.isArray(st.output)) return st.output.length;
  return null;
}

/** A step's box: wider and taller when it holds lanes. */
function stepSize(lanes) {
  if (!lanes.length) return { w: NODE_W, h: NODE_H };
  const shown = lanes.slice(0, INNER_LANES);
  const slots = Math.max(1, ...shown.map((lane) => Math.min(lane.steps.length, INNER_STEPS) + (lane.steps.length > INNER_STEPS ? 1 : 0)));
  const w = Math.max(NODE_W, INNER_PAD * 2 + INNER_LABEL_W + slots * INNER_STEP_W + (slots - 1) * INNER_GAP);
  const more = lanes.length > shown.length ? INNER_H * 0.6 : 0;
  return { w, h: NODE_H + shown.length * INNER_H + more };
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

const mean = (values) => values.reduce((sum, value) => sum + value, 0) / values.length;

/**
 * Where everything goes, so that no edge crosses a step it does not touch (a layered layout):
 * steps sit in rows by rank; an edge that skips rows passes each row in between through a lane
 * of its own (a placeholder as wide as the line, spaced from the steps like a step), and between
 * rows it runs only in the gap, where there are no steps. Rows are ordered to cross few edges,
 * then each item is pulled towards the items it is joined to.
 */
function layout(steps, edges, sizes) {
  const rank = ranks(steps, edges);
  const size = new Map();
  const rankOf = new Map();
  const rows = new Map();
  const put = (key, r, w, hgt) => {
    rankOf.set(key, r);
    size.set(key, { w, h: hgt });
    if (!rows.has(r)) rows.set(r, []);
    rows.get(r).push(key);
  };
  put(START, 0, TERM_W, TERM_H);
  for (const step of steps) {
    const { w, h: hgt } = sizes.get(step.id) || { w: NODE_W, h: NODE_H };
    put(step.id, rank.get(step.id), w, hgt);
  }
  put(END, rank.get(END), TERM_W, TERM_H);
  // Each edge as the chain of items it passes: its ends and a lane in every row between them.
  const chains = edges.map((edge, k) => {
    const a = rank.get(edge.from);
    const b = rank.get(edge.to);
    const chain = [edge.from];
    const dir = b > a ? 1 : -1;
    if (Math.abs(b - a) > 1) {
      for (let r = a + dir; r !== b; r += dir) {
        const key = `~${k}:${r}`; // "~" is never in a step id
        put(key, r, LANE_W, NODE_H);
        chain.push(key);
      }
    }
    chain.push(edge.to);
    return chain;
  });
  const neighbours = new Map([...size.keys()].map((key) => [key, []]));
  for (const chain of chains) {
    for (let i = 1; i < chain.length; i += 1) {
      const [u, v] = [chain[i - 1], chain[i]];
      if (Math.abs(rankOf.get(u) - rankOf.get(v)) !== 1) continue;
      neighbours.get(u).push(v);
      neighbours.get(v).push(u);
    }
  }
  const order = [...rows.keys()].sort((x, y) => x - y);
  const across = (key, r) => neighbours.get(key).filter((other) => rankOf.get(other) === r);

  // Order within rows: a few barycentre sweeps, down then up.
  const slot = new Map();
  for (const row of rows.values()) row.forEach((key, i) => slot.set(key, i));
  for (let pass = 0; pass < 4; pass += 1) {
    const down = pass % 2 === 0;
    for (const r of down ? order.slice(1) : order.slice(0, -1).reverse()) {
      const row = rows.get(r);
      const weight = new Map(
        row.map((key) => {
          const joined = across(key, down ? r - 1 : r + 1);
          return [key, joined.length ? mean(joined.map((other) => slot.get(other))) : slot.get(key)];
        }),
      );
      row.sort((x, y) => weight.get(x) - weight.get(y));
      row.forEach((key, i) => slot.set(key, i));
    }
  }

  // Positions: rows packed and centred, then each item pulled to the mean of what it is joined
  // to in the row above (then below), keeping its row's order and spacing.
  const center = new Map();
  const spacing = (a, b) => (size.get(a).w + size.get(b).w) / 2 + GAP_X;
  for (const row of rows.values()) {
    let x = 0;
    row.forEach((key, i) => {
      x = i ? x + spacing(row[i - 1], key) : 0;
      center.set(key, x);
    });
    const middle = x / 2;
    for (const key of row) center.set(key, center.get(key) - middle);
  }
  for (let pass = 0; pass < 6; pass += 1) {
    const down = pass % 2 === 0;
    for (const r of down ? order.slice(1) : order.slice(0, -1).reverse()) {
      const row = rows.get(r);
      const wanted = row.map((key) => {
        const joined = across(key, down ? r - 1 : r + 1);
        return joined.length ? mean(joined.map((other) => center.get(other))) : center.get(key);
      });
      // Pushed right from the left and left from the right, then the mean: both keep the
      // spacing, so their mean does too.
      const pushed = wanted.slice();
      for (let i = 1; i < row.length; i += 1) pushed[i] = Math.max(wanted[i], pushed[i - 1] + spacing(row[i - 1], row[i]));
      const pulled = wanted.slice();
      for (let i = row.length - 2; i >= 0; i -= 1) pulled[i] = Math.min(wanted[i], pulled[i + 1] - spacing(row[i], row[i + 1]));
      row.forEach((key, i) => center.set(key, (pushed[i] + pulled[i]) / 2));
    }
  }
  // Rows are as tall as their tallest step (one holding lanes), else a step's height. Steps sit
  // at their row's top (terminals in the middle of a step's height); an edge passing a row
  // (a lane) spans all of it.
  const last = order[order.length - 1];
  const rowHeight = new Map();
  const rowTop = new Map();
  let y = MARGIN;
  for (let r = 0; r <= last; r += 1) {
    const keys = rows.get(r) || [];
    rowHeight.set(r, Math.max(NODE_H, ...keys.filter((key) => !key.startsWith("~")).map((key) => size.get(key).h)));
    rowTop.set(r, y);
    y += rowHeight.get(r) + GAP_Y;
  }
  const leftmost = Math.min(...[...center].map(([key, x]) => x - size.get(key).w / 2));
  const box = new Map();
  for (const [key, x] of center) {
    const { w, h: hgt } = size.get(key);
    const r = rankOf.get(key);
    const top = rowTop.get(r);
    const bottom = top + rowHeight.get(r);
    const lane = key.startsWith("~");
    const height = lane ? rowHeight.get(r) : hgt;
    box.set(key, { x: x - w / 2 - leftmost + MARGIN, y: lane ? top : top + Math.max(0, (NODE_H - hgt) / 2), w, h: height, top, bottom, tall: rowHeight.get(r) > NODE_H });
  }
  const width = Math.max(...[...box.values()].map((b) => b.x + b.w)) + MARGIN;
  const height = y - GAP_Y + MARGIN;
  return { box, chains, rankOf, width, height };
}

/**
 * Each edge's points: out of its source's bottom (its top when it goes back up), through its
 * lanes, into its target's top (its bottom when it goes up or stays in the row). Edges sharing a
 * side of a step get their own port on it, in the order of where they go, so they do not cross there.
 */
function edgePoints(edges, { box, chains, rankOf }) {
  const sides = new Map(); // "key:bottom" -> [{k, end, toward}]
  const side = (key, where, k, end, toward) => {
    const name = `${key}:${where}`;
    if (!sides.has(name)) sides.set(name, []);
    sides.get(name).push({ k, end, toward });
  };
  const cx = (key) => box.get(key).x + box.get(key).w / 2;
  const dirs = chains.map((chain) => Math.sign(rankOf.get(chain[chain.length - 1]) - rankOf.get(chain[0])));
  chains.forEach((chain, k) => {
    const dir = dirs[k];
    const [first, second, last, beforeLast] = [chain[0], chain[1], chain[chain.length - 1], chain[chain.length - 2]];
    side(first, dir < 0 ? "top" : "bottom", k, 0, cx(second));
    side(last, dir > 0 ? "top" : "bottom", k, 1, cx(beforeLast) + (dir === 0 ? 0.5 : 0));
  });
  const ports = new Map(); // "k:end" -> x
  for (const [name, users] of sides) {
    const b = box.get(name.slice(0, name.lastIndexOf(":")));
    // Ties are an edge each way between the same two steps: the one going down keeps to the
    // left at both ends, so the two do not cross.
    const tie = name.endsWith(":top") ? -1 : 1;
    users.sort((p, q) => p.toward - q.toward || tie * (p.end - q.end));
    const step = users.length > 1 ? Math.min(22, (b.w - 24) / (users.length - 1)) : 0;
    users.forEach((user, i) => ports.set(`${user.k}:${user.end}`, b.x + b.w / 2 + (i - (users.length - 1) / 2) * step));
  }
  const loops = new Map(); // same-row edges below each row, each a little deeper
  // An edge leaving (or entering) a step's bottom in a row taller than the step runs straight
  // between the step and the row's bottom (`lead`, `tail`), and curves only in the gap below.
  const below = (b, x) => {
    const at = [x, b.y + b.h];
    return b.tall && b.y + b.h < b.bottom ? { point: [x, b.bottom], straight: at } : { point: at, straight: null };
  };
  return chains.map((chain, k) => {
    const dir = dirs[k];
    const from = box.get(chain[0]);
    const to = box.get(chain[chain.length - 1]);
    const out = dir < 0 ? { point: [ports.get(`${k}:0`), from.y], straight: null } : below(from, ports.get(`${k}:0`));
    const into = dir > 0 ? { point: [ports.get(`${k}:1`), to.y], straight: null } : below(to, ports.get(`${k}:1`));
    const [start, end, lead, tail] = [out.point, into.point, out.straight, into.straight];
    if (dir === 0) {
      const r = rankOf.get(chain[0]);
      loops.set(r, (loops.get(r) || 0) + 1);
      const depth = Math.min(GAP_Y - 8, 28 + 10 * (loops.get(r) - 1)) / 0.75; // a cubic reaches 3/4 of its handles
      return { points: [start, end], loop: start[1] + depth, lead, tail };
    }
    const points = [start];
    for (const key of chain.slice(1, -1)) {
      const lane = box.get(key);
      const x = lane.x + lane.w / 2;
      points.push(dir > 0 ? [x, lane.top] : [x, lane.top + lane.h], dir > 0 ? [x, lane.top + lane.h] : [x, lane.top]);
    }
    points.push(end);
    return { points, loop: null, lead, tail };
  });
}

/** SVG path data: S-curves across the gaps between rows (points 0-1, 2-3, ...), straight lines
 * through the lanes (1-2, 3-4, ...); a same-row edge dips into the gap below its row. */
function pathData({ points, loop, lead = null, tail = null }) {
  const [x0, y0] = points[0];
  let d = lead ? `M ${lead[0]} ${lead[1]} L ${x0} ${y0}` : `M ${x0} ${y0}`;
  if (loop !== null) {
    const [x1, y1] = points[1];
    d += ` C ${x0} ${loop}, ${x1} ${loop}, ${x1} ${y1}`;
  } else {
    for (let i = 1; i < points.length; i += 1) {
      const [xa, ya] = points[i - 1];
      const [xb, yb] = points[i];
      if (i % 2 === 0) d += ` L ${xb} ${yb}`;
      else {
        const ym = (ya + yb) / 2;
        d += ` C ${xa} ${ym}, ${xb} ${ym}, ${xb} ${yb}`;
      }
    }
  }
  return tail ? `${d} L ${tail[0]} ${tail[1]}` : d;
}

/** Where an edge's label goes: near its source, a third of the way across the first gap (so two
 * edges between the same steps, one each way, label apart), or the bottom of a same-row dip. */
function labelAt({ points, loop }) {
  const [[xa, ya], [xb, yb]] = points;
  if (loop !== null) return [(xa + xb) / 2, ya + (loop - ya) * 0.75 - 4];
  const t = 0.3; // the S-curve's point at t: handles at the gap's middle height
  const u = 1 - t;
  const ym = (ya + yb) / 2;
  return [xa * (u ** 3 + 3 * u * u * t) + xb * (3 * u * t * t + t ** 3), ya * u ** 3 + ym * 3 * u * t + yb * t ** 3 + 4];
}

/** A label's spot moved down, line by line, until it overlaps no label placed before it. */
function freeSpot(placed, [x, y], text) {
  const w = text.length * 6.5 + 4;
  let top = y;
  while (placed.some((other) => Math.abs(other.x - x) < (other.w + w) / 2 && Math.abs(other.y - top) < 12)) top += 12;
  placed.push({ x, y: top, w });
  return [x, top];
}

function truncate(text, length) {
  const value = String(text);
  return value.length > length ? `${value.slice(0, length - 1)}…` : value;
}

/** A step's status on the graph: what its events say; "not run" for one an ended run never reached. */
export function stepStatus(st, ended) {
  if (st && st.status !== "pending") return st.status;
  return ended ? "not_run" : "pending";
}

function meta(st, status, now) {
  if (!st || st.status === "pending") return status.replace("_", " ");
  const parts = [st.status.replace("_", " ")];
  parts.push(`×${st.attempts}`);
  if (st.startedAt) {
    const end = st.endedAt ? Date.parse(st.endedAt) : now;
    parts.push(duration(end - Date.parse(st.startedAt)));
  }
  return parts.join(" · ");
}

/**
 * The lanes inside a step (innerLanes), drawn below its id, type and state: each lane's name, then
 * its steps in order. A branch's step shows its state when the run's events name it (branches
 * run inside the run); a branch run as a child run has its own page.
 */
function drawLanes(lanes, width, states) {
  const group = s("g", { class: "lanes" });
  const shown = lanes.slice(0, INNER_LANES);
  shown.forEach((lane, i) => {
    const row = s("g", {
      class: ["lane", `lane-${lane.kind}`],
      transform: `translate(0 ${NODE_H - 6 + i * INNER_H})`,
      dataset: { lane: lane.label },
    });
    row.appendChild(s("rect", { class: "lane-band", x: INNER_PAD - 4, y: 0, width: width - 2 * (INNER_PAD - 4), height: INNER_H - 4, rx: 4 }));
    row.appendChild(s("text", { class: "lane-label", x: INNER_PAD + 2, y: 16 }, truncate(lane.label, 11)));
    const drawn = lane.steps.slice(0, INNER_STEPS);
    drawn.forEach((step, k) => {
      const x = INNER_PAD + INNER_LABEL_W + k * (INNER_STEP_W + INNER_GAP);
      const mid = 2 + INNER_STEP_H / 2;
      if (k) row.appendChild(s("path", { class: "lane-link", d: `M ${x - INNER_GAP} ${mid} L ${x} ${mid}` }));
      const st = lane.kind === "parallel" ? states.get(step.id) : null;
      row.appendChild(
        s(
          "g",
          { class: ["lane-step", st && `status-${token(st.status)}`], transform: `translate(${x} 2)`, dataset: { innerStep: step.id } },
          s("title", null, `${step.id} (${step.type})`),
          s("rect", { width: INNER_STEP_W, height: INNER_STEP_H, rx: 4 }),
          s("text", { x: INNER_STEP_W / 2, y: 14, "text-anchor": "middle" }, truncate(step.id, 12)),
        ),
      );
    });
    if (lane.steps.length > drawn.length) {
      const x = INNER_PAD + INNER_LABEL_W + drawn.length * (INNER_STEP_W + INNER_GAP);
      row.appendChild(s("text", { class: "lane-more", x, y: 16 }, `+${lane.steps.length - drawn.length} more`));
    }
    group.appendChild(row);
  });
  if (lanes.length > shown.length) {
    const y = NODE_H - 6 + shown.length * INNER_H + 10;
    group.appendChild(s("text", { class: "lane-more", x: INNER_PAD + 2, y }, `+${lanes.length - shown.length} more branches`));
  }
  return group;
}

/**
 * The SVG of a run's graph. `routeFields` as for routes; `states` from stepStates; `taken` from
 * takenEdges; `ended` once the run has ended (steps it never reached are then "not run");
 * `selected` a step id; `onSelect(stepId)` when a step is clicked or chosen with the keyboard;
 * `children` the run's `children` (how many items the map it waits for runs).
 */
export function renderGraph(
  definition,
  { routeFields = new Map(), states, taken, ended = false, selected, onSelect, children = null, now = Date.now() },
) {
  const steps = definition.steps || [];
  const edges = routes(definition, routeFields);
  const inner = new Map(steps.map((step) => [step.id, innerLanes(step, itemCount(step, children, states.get(step.id)))]));
  const placed = layout(steps, edges, new Map(steps.map((step) => [step.id, stepSize(inner.get(step.id))])));
  const { box, width, height } = placed;
  const routed = edgePoints(edges, placed);

  const svg = s("svg", {
    class: ["graph", ended && "ended"],
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

  // Edges first, so steps sit on top of them; the path taken last, so nothing hides it.
  const edgeLayer = s("g", { class: "edges" });
  const drawn = edges.map((edge, k) => ({ edge, route: routed[k], isTaken: taken.has(edgeKey(edge)) }));
  drawn.sort((a, b) => Number(a.isTaken) - Number(b.isTaken));
  const labels = [];
  for (const { edge, route, isTaken } of drawn) {
    const group = s("g", {
      class: ["edge", `edge-${token(edge.kind)}`, isTaken && "taken"],
      dataset: { from: edge.from, to: edge.to, kind: edge.kind },
    });
    group.appendChild(s("path", { d: pathData(route), "marker-end": `url(#arrow-${isTaken ? "taken" : "plain"})` }));
    if (edge.label) {
      const [lx, ly] = freeSpot(labels, labelAt(route), edge.label);
      group.appendChild(s("text", { x: lx, y: ly, class: "edge-label", "text-anchor": "middle" }, edge.label));
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
        { class: ["terminal", reached && "reached"], transform: `translate(${b.x} ${b.y})`, dataset: { terminal: id } },
        s("rect", { width: b.w, height: b.h, rx: b.h / 2 }),
        s("text", { x: b.w / 2, y: b.h / 2 + 4, "text-anchor": "middle" }, id === START ? "start" : "end"),
      ),
    );
  }
  for (const step of steps) {
    const b = box.get(step.id);
    const st = states.get(step.id);
    const status = stepStatus(st, ended);
    const node = s(
      "g",
      {
        class: ["node", `status-${token(status)}`, st && st.visits > 0 && "on-path", selected === step.id && "selected"],
        transform: `translate(${b.x} ${b.y})`,
        tabindex: 0,
        role: "button",
        "aria-label": `step ${step.id}: ${status.replace("_", " ")}`,
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
      s("text", { class: "node-meta", x: 16, y: 46 }, meta(st, status, now)),
      inner.get(step.id).length ? drawLanes(inner.get(step.id), b.w, states) : null,
    );
    nodeLayer.appendChild(node);
  }
  svg.appendChild(nodeLayer);
  return svg;
}
