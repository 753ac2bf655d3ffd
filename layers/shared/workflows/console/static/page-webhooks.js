// The webhook DLQ: failed deliveries with their attempts and last error, and replay.

import { api, isAbort } from "./api.js";
import { badge, errorBox, h, json, link, notify, replace, shortId, when } from "./dom.js";

const STATUSES = ["pending", "delivered", "exhausted"];

export function render(main, params, ctx) {
  const controller = new AbortController();
  const { signal } = controller;
  const status = STATUSES.includes(ctx.query.get("status")) ? ctx.query.get("status") : "";
  const cursor = ctx.query.get("cursor") || "";
  const table = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading the DLQ…"));
  const pager = h("div", { class: "pager" });
  const hashFor = (next) => {
    const search = new URLSearchParams();
    if (next.status) search.set("status", next.status);
    if (next.cursor) search.set("cursor", next.cursor);
    const text = search.toString();
    return `#/webhooks${text ? `?${text}` : ""}`;
  };
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "status" },
    ["", ...STATUSES].map((value) =>
      h("a", { href: hashFor({ status: value }), class: value === status ? "active" : null }, value || "all"),
    ),
  );
  replace(
    main,
    h("h1", null, "Webhook DLQ"),
    h("p", { class: "muted" }, "Deliveries that failed, newest first. The retry worker tries pending rows again with backoff; replay tries one now."),
    tabs,
    table,
    pager,
  );

  function row(item) {
    const detail = h("tr", { class: "row-detail", hidden: true }, h("td", { colspan: 8 }));
    const line = h(
      "tr",
      { dataset: { rowId: item.id, status: item.status } },
      h("td", null, when(item.created_at)),
      h("td", { class: "mono nowrap" }, link(shortId(item.run_id), "runs", item.run_id)),
      h("td", null, badge(item.status)),
      h("td", { class: "num attempts" }, String(item.attempts)),
      h("td", { class: "last-error" }, item.last_error || ""),
      h("td", { class: "mono destination" }, item.destination),
      h("td", null, when(item.next_attempt_at)),
      h(
        "td",
        { class: "buttons" },
        h("button", { type: "button", "data-action": "replay", onclick: (event) => replay(item, event.currentTarget) }, "Replay"),
        h("button", { type: "button", onclick: () => toggle(item, detail) }, "Details"),
      ),
    );
    return [line, detail];
  }

  async function toggle(item, detail) {
    detail.hidden = !detail.hidden;
    if (detail.hidden) return;
    try {
      const full = await api(`webhooks/dlq/${encodeURIComponent(item.id)}`, { signal });
      replace(
        detail.firstChild,
        h("p", null, "webhook-id ", h("span", { class: "mono" }, full.webhook_id), "; extra headers: ", full.header_names.length ? full.header_names.join(", ") : "none"),
        json(full.body),
      );
    } catch (error) {
      if (!isAbort(error)) replace(detail.firstChild, errorBox(error));
    }
  }

  async function replay(item, button) {
    button.disabled = true;
    try {
      const answer = await api(`webhooks/dlq/${encodeURIComponent(item.id)}/replay`, { method: "POST", signal });
      const attempt = answer.attempt || {};
      notify(
        `replay: ${attempt.outcome}${attempt.status_code ? ` (${attempt.status_code})` : ""}${attempt.error ? `: ${attempt.error}` : ""}; the row is ${answer.status} after ${answer.attempts} attempts`,
        attempt.outcome === "delivered" ? "info" : "error",
      );
      await load();
    } catch (error) {
      if (!isAbort(error)) notify(`replay refused (${error.code}): ${error.message}`, "error");
      button.disabled = false;
    }
  }

  async function load() {
    const answer = await api("webhooks/dlq", { query: { status: status || undefined, cursor: cursor || undefined }, signal });
    const rows = answer.rows || [];
    replace(
      table,
      rows.length
        ? h(
            "table",
            { class: "table dlq" },
            h("thead", null, h("tr", null, ["created", "run", "status", "attempts", "last error", "destination", "next attempt", ""].map((c) => h("th", null, c)))),
            h("tbody", null, rows.map(row)),
          )
        : h("p", { class: "muted empty" }, "No failed deliveries."),
    );
    replace(
      pager,
      cursor ? h("a", { class: "button", href: hashFor({ status }) }, "First page") : null,
      answer.next_cursor ? h("a", { class: "button", href: hashFor({ status, cursor: answer.next_cursor }) }, "Older rows") : null,
    );
  }

  load().catch((error) => {
    if (!isAbort(error)) replace(table, errorBox(error));
  });
  return () => controller.abort();
}
