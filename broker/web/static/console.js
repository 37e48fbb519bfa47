// The Sluice console: polls the broker's JSON API every REFRESH_MS, follows a live tail over
// server-sent events, and posts the two writes (create a topic, produce a record). Data from
// the broker is only ever set as text (textContent), never parsed as HTML.
"use strict";

const REFRESH_MS = 1000;
const TAIL_ROWS = 200;
const $ = (id) => document.getElementById(id);
let previous = null; // the last /api/topics answer, for rates
let tail = null; // the EventSource of the live tail

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : child === null || child === undefined ? "" : String(child));
  }
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function rate(value) { return value === null ? "" : value.toFixed(value < 10 ? 1 : 0); }

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

// -- the broker ---------------------------------------------------------------------------

async function refreshBroker() {
  try {
    const info = await api("/api/broker");
    const health = info.health;
    $("broker").textContent = `broker ${info.broker_id} · v${info.version} · ` +
      `${info.listeners.sluice}` +
      (info.listeners.kafka ? ` (Kafka clients: ${info.listeners.kafka})` : "") +
      ` · ${info.connections} connection(s) · ` +
      `up ${Math.round(info.uptime_s)} s`;
    $("health").textContent = health.status;
    $("health").className = `badge ${health.status}`;
    $("health").title = health.offline_partitions.map(
      (p) => `${p.topic}[${p.partition}] offline: ${p.reason}`).join("\n");
    document.querySelectorAll("#create-form, #produce-form").forEach((form) => {
      form.hidden = info.read_only;
    });
  } catch (error) {
    $("health").textContent = "unreachable";
    $("health").className = "badge down";
  }
}

// -- topics -------------------------------------------------------------------------------

function perSecond(now, key, topic, partition, field) {
  if (!previous) return null;
  const seconds = (now.now_ms - previous.now_ms) / 1000;
  const before = previous.index.get(`${topic}/${partition}`);
  if (!before || seconds <= 0) return null;
  return Math.max(0, (key[field] - before[field]) / seconds);
}

async function refreshTopics() {
  const now = await api("/api/topics");
  now.index = new Map();
  const body = $("topics").tBodies[0];
  body.replaceChildren();
  for (const topic of now.topics) {
    let records = 0, size = 0, segments = 0, rin = 0, rout = 0, bin = 0, rated = false;
    const rows = [];
    for (const p of topic.partitions) {
      if (p.offline) {
        rows.push(el("tr", {"data-partition": `${topic.name}/${p.partition}`}, el("td"),
          el("td", {}, p.partition), el("td", {colspan: "8", class: "status error"}, `offline: ${p.offline}`)));
        continue;
      }
      now.index.set(`${topic.name}/${p.partition}`, p);
      const inRate = perSecond(now, p, topic.name, p.partition, "records_in");
      const outRate = perSecond(now, p, topic.name, p.partition, "records_out");
      const bytesRate = perSecond(now, p, topic.name, p.partition, "bytes_in");
      if (inRate !== null) { rated = true; rin += inRate; rout += outRate; bin += bytesRate; }
      records += p.log_end_offset - p.log_start_offset;
      size += p.size_bytes;
      segments += p.segments;
      rows.push(el("tr", {"data-partition": `${topic.name}/${p.partition}`}, el("td"),
        el("td", {}, p.partition), el("td", {class: "num"}, p.log_start_offset),
        el("td", {class: "num"}, p.log_end_offset),
        el("td", {class: "num"}, p.log_end_offset - p.log_start_offset),
        el("td", {class: "num"}, bytes(p.size_bytes)), el("td", {class: "num"}, p.segments),
        el("td", {class: "num"}, rate(inRate)), el("td", {class: "num"}, rate(outRate)),
        el("td", {class: "num"}, bytesRate === null ? "" : (bytesRate / 1e6).toFixed(2))));
    }
    const head = el("tr", {class: "topic", "data-topic": topic.name, title: "tail this topic"},
      el("td", {}, topic.name), el("td", {}, `${topic.partitions.length} partition(s)`),
      el("td"), el("td"), el("td", {class: "num"}, records), el("td", {class: "num"}, bytes(size)),
      el("td", {class: "num"}, segments), el("td", {class: "num"}, rated ? rate(rin) : ""),
      el("td", {class: "num"}, rated ? rate(rout) : ""),
      el("td", {class: "num"}, rated ? (bin / 1e6).toFixed(2) : ""));
    head.addEventListener("click", () => { $("tail-topic").value = topic.name; });
    body.append(head, ...rows);
  }
  $("no-topics").hidden = now.topics.length > 0;
  for (const id of ["tail-topic", "produce-topic"]) fillTopics($(id), now.topics);
  previous = now;
}

function fillTopics(select, topics) {
  const chosen = select.value;
  const names = topics.map((t) => t.name);
  if ([...select.options].map((o) => o.value).join("\n") === names.join("\n")) return;
  select.replaceChildren(...names.map((name) => el("option", {value: name}, name)));
  if (names.includes(chosen)) select.value = chosen;
}

// -- groups -------------------------------------------------------------------------------

async function refreshGroups() {
  const now = await api("/api/groups");
  const body = $("groups").tBodies[0];
  body.replaceChildren();
  for (const group of now.groups) {
    const members = group.members.map((m) =>
      `${m.client_id || m.member_id}: ${m.assignment.map(([t, p]) => `${t}[${p}]`).join(" ") || "-"}`);
    body.append(el("tr", {class: "topic", "data-group": group.group_id},
      el("td", {}, group.group_id), el("td", {}, `${group.kind}, ${group.state}`),
      el("td", {title: members.join("\n")}, group.members.length), el("td"), el("td"), el("td"), el("td"),
      el("td", {class: `num lag total${group.total_lag ? " behind" : ""}`}, group.total_lag)));
    for (const member of members) {
      body.append(el("tr", {}, el("td"), el("td", {colspan: "7", class: "status"}, member)));
    }
    for (const o of group.offsets) {
      body.append(el("tr", {"data-group-partition": `${group.group_id}/${o.topic}/${o.partition}`},
        el("td"), el("td"), el("td"), el("td", {}, o.topic), el("td", {}, o.partition),
        el("td", {class: "num"}, o.committed), el("td", {class: "num"}, o.log_end_offset),
        el("td", {class: `num lag${o.lag > 0 ? " behind" : ""}`}, o.lag < 0 ? "gone" : o.lag)));
    }
  }
  $("no-groups").hidden = now.groups.length > 0;
}

// -- the live tail ------------------------------------------------------------------------

function startTail(event) {
  event.preventDefault();
  stopTail();
  const topic = $("tail-topic").value;
  if (!topic) return;
  const query = new URLSearchParams({from: $("tail-from").value});
  if ($("tail-partition").value !== "") query.set("partition", $("tail-partition").value);
  $("tail-records").replaceChildren();
  tail = new EventSource(`/api/topics/${encodeURIComponent(topic)}/tail?${query}`);
  $("tail-status").textContent = `connecting to ${topic}…`;
  $("tail-start").disabled = true;
  $("tail-stop").disabled = false;
  tail.addEventListener("hello", () => { $("tail-status").textContent = `following ${topic}`; });
  tail.addEventListener("records", (e) => showRecords(JSON.parse(e.data)));
  tail.addEventListener("skipped", (e) => {
    const s = JSON.parse(e.data);
    $("tail-status").textContent = `fell behind: skipped partition ${s.partition} offsets ${s.from}..${s.to - 1}`;
  });
  tail.addEventListener("undecodable", (e) => {
    const u = JSON.parse(e.data);
    $("tail-status").textContent = `partition ${u.partition}: ${u.batches} batch(es) could not be decoded`;
  });
  tail.addEventListener("end", (e) => {
    $("tail-status").textContent = `ended: ${JSON.parse(e.data).reason}`;
    stopTail();
  });
  tail.onerror = () => { $("tail-status").textContent = "connection lost; retrying…"; };
}

function stopTail() {
  if (tail) tail.close();
  tail = null;
  $("tail-start").disabled = false;
  $("tail-stop").disabled = true;
}

function showRecords(records) {
  const body = $("tail-records");
  for (const r of records) {
    const headers = r.headers.map(([k, v]) => `${k}=${v}`).join(", ");
    const row = el("tr", {class: "fresh", "data-offset": `${r.partition}/${r.offset}`},
      el("td", {}, r.partition), el("td", {class: "num"}, r.offset),
      el("td", {}, new Date(r.timestamp).toISOString()), el("td", {}, r.key === null ? "∅" : r.key),
      el("td", {title: `${r.value_bytes ?? 0} bytes`}, r.value === null ? "∅" : r.value),
      el("td", {}, headers));
    body.prepend(row);
  }
  while (body.rows.length > TAIL_ROWS) body.deleteRow(-1);
}

// -- writes -------------------------------------------------------------------------------

async function createTopic(event) {
  event.preventDefault();
  const result = $("create-result");
  const body = {name: $("create-name").value, partitions: Number($("create-partitions").value)};
  if ($("create-retention").value !== "") body.configs = {retention_ms: Number($("create-retention").value)};
  try {
    const created = await api("/api/topics", body);
    result.textContent = `created ${created.name} (${created.partitions} partition(s), id ${created.topic_id})`;
    result.className = "status";
    await refreshTopics();
  } catch (error) {
    result.textContent = error.message;
    result.className = "status error";
  }
}

async function produce(event) {
  event.preventDefault();
  const result = $("produce-result");
  const topic = $("produce-topic").value;
  const headers = $("produce-headers").value.split(",").map((h) => h.trim()).filter(Boolean)
    .map((h) => { const at = h.indexOf("="); return at < 0 ? [h, ""] : [h.slice(0, at), h.slice(at + 1)]; });
  const body = {value: $("produce-value").value, partition: Number($("produce-partition").value), headers};
  if ($("produce-key").value !== "") body.key = $("produce-key").value;
  try {
    const written = await api(`/api/topics/${encodeURIComponent(topic)}/records`, body);
    result.textContent = `written to ${written.topic}[${written.partition}] at offset ${written.offset}`;
    result.className = "status";
  } catch (error) {
    result.textContent = error.message;
    result.className = "status error";
  }
}

// -- start --------------------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([refreshBroker(), refreshTopics(), refreshGroups()]);
  } catch (error) {
    $("health").textContent = "unreachable";
    $("health").className = "badge down";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("tail-form").addEventListener("submit", startTail);
  $("tail-stop").addEventListener("click", stopTail);
  $("create-form").addEventListener("submit", createTopic);
  $("produce-form").addEventListener("submit", produce);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
