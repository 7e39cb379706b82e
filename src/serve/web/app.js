// ferry's operations page: a client of the public REST API (/api/data-migration/…) with the user's bearer
// token, kept in this tab's session storage. Active operations are followed through their event streams
// (read with fetch, since EventSource cannot send a token); nothing reloads the page.
"use strict";

const API = "/api/data-migration";
const TOKEN_KEY = "ferry-token";
const HISTORY_PAGE = 20;
const $ = (id) => document.getElementById(id);

// ---- the API --------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// An API error as words a person can act on.
function describe(err) {
  if (!(err instanceof ApiError)) return "The server could not be reached: " + err.message;
  const why = {
    400: "The request was malformed",
    401: "The token was refused",
    403: "This token is not allowed to do that",
    404: "Not found",
    409: "Conflict",
    413: "The file is larger than this server accepts",
    422: "The request was refused",
    429: "The server is busy; try again shortly",
    503: "The server is shutting down",
  }[err.status] || "The server answered " + err.status;
  return `${why} (${err.status} ${err.code}): ${err.message}`;
}

async function errorOf(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error) return new ApiError(status, body.error.code, body.error.message, body.error.details);
  } catch (_) { /* not JSON: fall through */ }
  return new ApiError(status, "http_" + status, text.slice(0, 200) || "no explanation was given");
}

async function api(method, path, body, contentType, useToken) {
  const headers = { Authorization: "Bearer " + (useToken || token()) };
  if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
  const response = await fetch(path.startsWith(API) ? path : API + path, {
    method,
    headers,
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  });
  const text = await response.text();
  if (!response.ok) {
    const err = await errorOf(response.status, text);
    if (err.status === 401 && !useToken) signOut(describe(err));
    throw err;
  }
  return text ? JSON.parse(text) : null;
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// Runs an action; an error becomes words in the notice bar, never a blank screen.
function guarded(action) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    try {
      notice("");
      await action(event);
    } catch (err) {
      notice(describe(err));
    }
  };
}

// ---- small helpers --------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const number = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));

function seconds(s) {
  if (s === undefined || s === null || !isFinite(s)) return "–";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function duration(op) {
  if (!op.startTime) return "–";
  const end = op.endTime ? Date.parse(op.endTime) : Date.now();
  return seconds((end - Date.parse(op.startTime)) / 1000);
}

const countsText = (c) => `${number(c.read)} = ${number(c.written)} + ${number(c.rejected)} + ${number(c.filtered)} + ${number(c.skipped)}`;

function recordError(e) {
  const place = [e.record && "record " + e.record, e.line && "line " + e.line, e.field && "field " + e.field]
    .filter(Boolean).join(", ");
  return place ? `${place}: ${e.error}` : e.error;
}

function firstErrors(op, n) {
  const lines = (op.errors || []).slice(0, n).map(recordError);
  if (op.error && op.error.code !== "cancelled") lines.unshift(op.error.message);
  return lines.join("; ");
}

const isFinal = (status) => ["succeeded", "failed", "cancelled"].includes(status);

// ---- sign in and out ------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const given = $("token").value.trim();
  $("signin-error").hidden = true;
  try {
    await api("GET", "/datasets", undefined, undefined, given);
  } catch (err) {
    $("signin-error").textContent = "Sign-in failed. " + describe(err);
    $("signin-error").hidden = false;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, given);
  $("token").value = "";
  enter();
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const stream of streams.values()) stream.abort();
  streams.clear();
  // Nothing the last token could see stays on the page.
  for (const id of ["template-list", "template-view", "validate-result", "report-fields", "report-files", "report-errors"]) {
    $(id).replaceChildren();
  }
  for (const id of ["template-result", "import-result", "export-result", "report-json", "page"]) $(id).textContent = "";
  $("active").tBodies[0].replaceChildren();
  $("history").tBodies[0].replaceChildren();
  $("report").hidden = true;
  ownRuns.clear();
  samples.clear();
  $("nav").hidden = true;
  for (const id of ["operations", "start", "templates"]) $(id).hidden = true;
  $("signin").hidden = false;
  notice("");
  $("signin-error").textContent = why || "";
  $("signin-error").hidden = !why;
  $("token").focus();
}

function enter() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  show("operations");
  loadDatasets().catch((err) => notice(describe(err)));
}

function show(view) {
  for (const id of ["operations", "start", "templates"]) $(id).hidden = id !== view;
  for (const b of document.querySelectorAll("nav button[data-view]")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  const load = { operations: refreshOperations, templates: loadTemplates }[view];
  if (load) guarded(load)();
}

async function loadDatasets() {
  const datasets = await api("GET", "/datasets");
  for (const [select, first] of [[$("import-dataset"), "auto-detect"], [$("export-dataset"), "all"]]) {
    select.replaceChildren(el("option", { value: first }, first),
      ...datasets.map((d) => el("option", { value: d.dataType }, `${d.dataType} (${d.database} table ${d.table})`)));
  }
}

// ---- active operations: rows fed by event streams --------------------------------------------------------

const streams = new Map(); // operation id → AbortController of its event stream
const samples = new Map(); // operation id → first {t, records} seen, for the rate
const ownRuns = new Set(); // operations this page started: their report opens when they end

function activeRow(id) {
  return document.querySelector(`#active tr[data-id="${CSS.escape(id)}"]`);
}

// A row of the active table, made once per operation so that its buttons stay put while events update it.
function makeRow(op) {
  const id = op.operationId;
  const cell = (name, cls) => el("td", { "data-cell": name, class: cls });
  const row = el("tr", { "data-id": id, "data-states": "" },
    el("td", {}, el("button", { type: "button", class: "secondary", onclick: guarded(() => openReport(id)) }, id)),
    cell("type"), cell("dataset"), cell("state", "state"), cell("records", "num"), cell("rate", "num"),
    cell("eta", "num"),
    el("td", {}, el("progress", { max: "100", "aria-label": `Progress of ${id}` }), el("span", { class: "sr" })),
    el("td", {}, el("button", { type: "button", class: "secondary", "data-cancel": id, onclick: () => askCancel(id) }, "Cancel")));
  $("active").tBodies[0].append(row);
  return row;
}

function updateRow(op) {
  const id = op.operationId;
  const row = activeRow(id) || makeRow(op);
  const now = Date.now();
  if (!samples.has(id)) samples.set(id, { t: now, records: op.currentRecord });
  const first = samples.get(id);
  const rate = now > first.t + 200 ? ((op.currentRecord - first.records) * 1000) / (now - first.t) : null;
  const states = row.dataset.states.split(" ").filter(Boolean);
  if (states[states.length - 1] !== op.status) states.push(op.status);
  row.dataset.states = states.join(" ");
  row.dataset.type = op.type;
  row.dataset.dataset = op.dataType;
  const percent = op.status === "succeeded" ? 100
    : op.progress !== null && op.progress !== undefined ? op.progress
    : op.totalRecords ? (100 * op.currentRecord) / op.totalRecords : null;
  const set = (name, text) => { row.querySelector(`[data-cell="${name}"]`).textContent = text; };
  set("type", op.type);
  set("dataset", op.dataType);
  set("state", op.status);
  row.querySelector('[data-cell="state"]').className = "state state-" + op.status;
  set("records", `${number(op.currentRecord)} / ${number(op.totalRecords)}`);
  set("rate", rate === null || isFinal(op.status) ? "–" : `${number(Math.round(rate))}/s`);
  set("eta", isFinal(op.status) ? "–" : seconds(op.etaSeconds));
  const bar = row.querySelector("progress");
  if (percent === null) bar.removeAttribute("value");
  else bar.value = percent;
  row.querySelector(".sr").textContent = percent === null ? "" : `${percent.toFixed(0)} percent`;
  row.querySelector("[data-cancel]").hidden = isFinal(op.status) || op.status === "cancelling";
  row.dataset.progress = percent === null ? "" : String(percent);
  $("active-empty").hidden = true;
}

function finished(op) {
  updateRow(op);
  streams.delete(op.operationId);
  samples.delete(op.operationId);
  loadHistory().catch((err) => notice(describe(err)));
  if (ownRuns.delete(op.operationId)) showReport(op.operationId).catch((err) => notice(describe(err)));
  // The finished row stays a moment so its last state can be read, then the history has it.
  setTimeout(() => {
    const row = activeRow(op.operationId);
    if (row && !streams.has(op.operationId)) row.remove();
    $("active-empty").hidden = $("active").tBodies[0].rows.length > 0;
  }, 5000);
}

// Follows one operation's Server-Sent Events until its `end` event.
async function follow(id) {
  if (streams.has(id)) return;
  const control = new AbortController();
  streams.set(id, control);
  try {
    const response = await fetch(`${API}/operations/${encodeURIComponent(id)}/events`, {
      headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
      signal: control.signal,
    });
    if (!response.ok) throw await errorOf(response.status, await response.text());
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const name = (block.match(/^event: ?(.*)$/m) || [])[1];
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.replace(/^data: ?/, "")).join("\n");
        if (!data) continue;
        const op = JSON.parse(data);
        if (name === "end") {
          finished(op);
          return;
        }
        updateRow(op);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") notice(describe(err));
  } finally {
    if (streams.get(id) === control) streams.delete(id);
  }
}

async function refreshActive() {
  if (!token()) return;
  const list = await api("GET", "/operations/active");
  for (const op of list.operations) {
    if (!streams.has(op.operationId)) {
      updateRow(op);
      follow(op.operationId);
    }
  }
}

function askCancel(id) {
  const dialog = $("confirm");
  const row = activeRow(id);
  $("confirm-text").textContent = `Cancel ${row.dataset.type} ${id} of ${row.dataset.dataset}? ` +
    "Its target is left as it was.";
  dialog.returnValue = "";
  dialog.onclose = guarded(async () => {
    if (dialog.returnValue !== "yes") return;
    const answer = await api("POST", `/operations/${encodeURIComponent(id)}/cancel`);
    if (isFinal(answer.status)) finished(answer);
    else updateRow(answer);
  });
  dialog.showModal();
}

// ---- history and reports --------------------------------------------------------------------------------

let historyOffset = 0;

async function refreshOperations() {
  await Promise.all([refreshActive(), loadHistory()]);
}

function nextDay(date) {
  const d = new Date(date + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

async function loadHistory() {
  const form = new FormData($("history-filters"));
  const query = new URLSearchParams({ limit: HISTORY_PAGE, offset: historyOffset });
  for (const key of ["state", "type", "since"]) if (form.get(key)) query.set(key, form.get(key));
  if (form.get("until")) query.set("until", nextDay(form.get("until"))); // the whole day given
  const list = await api("GET", "/operations/history?" + query);
  $("history").tBodies[0].replaceChildren(...list.operations.map((op) => el("tr", { "data-id": op.operationId },
    el("td", {}, el("button", { type: "button", class: "secondary", onclick: guarded(() => openReport(op.operationId)) }, op.operationId)),
    el("td", {}, op.type),
    el("td", {}, op.dataType),
    el("td", { class: "state state-" + op.status }, op.status),
    el("td", { class: "num" }, countsText(op.counts)),
    el("td", { class: "num" }, duration(op)),
    el("td", { class: "num" }, (op.startTime || op.createdAt).replace("T", " ").slice(0, 19)),
    el("td", {}, firstErrors(op, 3)))));
  const last = Math.min(list.offset + list.operations.length, list.total);
  $("page").textContent = list.total ? `${list.offset + 1}–${last} of ${list.total}` : "no operations";
  $("prev").disabled = historyOffset === 0;
  $("next").disabled = last >= list.total;
}

// A report asked for: shown, and the keyboard's focus moved to it.
async function openReport(id) {
  await showReport(id);
  $("report-title").focus();
}

async function download(file) {
  const response = await fetch(file.url, { headers: { Authorization: "Bearer " + token() } });
  if (!response.ok) throw await errorOf(response.status, await response.text());
  const blob = await response.blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: file.name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

async function showReport(id) {
  const op = await api("GET", `/operations/${encodeURIComponent(id)}/progress`);
  const c = op.counts;
  const fields = [
    ["Operation", op.operationId], ["Type", op.type + (op.dryRun ? " (dry run)" : "")], ["Dataset", op.dataType],
    ["State", op.status], ["Step", op.currentStep], ["File", op.fileName],
    ["Records", `read ${number(c.read)} = written ${number(c.written)} + rejected ${number(c.rejected)} + ` +
      `filtered ${number(c.filtered)} + skipped ${number(c.skipped)}`],
    ["Table", op.table && `inserted ${number(op.table.inserted)}, updated ${number(op.table.updated)}`],
    ["Valid", op.valid === undefined ? null : op.valid ? "yes" : "no"],
    ["Bytes", `read ${number(op.bytes.read)}${op.bytes.total ? " of " + number(op.bytes.total) : ""}, written ${number(op.bytes.written)}`],
    ["Created", op.createdAt], ["Started", op.startTime], ["Ended", op.endTime], ["Duration", duration(op)],
    ["Error", op.error && `${op.error.message} (${op.error.code})`], ["Token", op.token], ["User", op.userId],
  ].filter(([, v]) => v !== undefined && v !== null);
  $("report-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  const files = (op.result && op.result.files) || [];
  $("report-files").replaceChildren(files.length === 0 ? "" : el("div", {},
    el("h3", {}, op.result.expired ? "Files (expired)" : `Files (kept until ${op.result.expiresAt})`),
    el("div", { class: "scroll" }, el("table", { id: "files" },
      el("thead", {}, el("tr", {}, ["Name", "Role", "Bytes", "SHA-256", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, files.map((f) => el("tr", { "data-name": f.name },
        el("td", {}, f.name), el("td", {}, f.role), el("td", { class: "num" }, number(f.bytes)),
        el("td", { class: "sha" }, f.sha256),
        el("td", {}, op.result.expired ? "" : el("button", { type: "button", onclick: guarded(() => download(f)) },
          el("span", { class: "sr" }, f.name + ": "), "Download")))))))));
  $("report-errors").replaceChildren(op.errors.length === 0 ? "" : el("div", {},
    el("h3", {}, `First errors (${op.errors.length} of ${number(c.rejected)} rejected)`),
    el("ul", {}, op.errors.map((e) => el("li", {}, recordError(e))))));
  $("report-json").textContent = JSON.stringify(op, null, 2);
  $("report").hidden = false;
  $("report").dataset.id = op.operationId;
  $("report").dataset.status = op.status;
}

// ---- start a job ----------------------------------------------------------------------------------------

function importOptions() {
  const f = $("import-form");
  const options = { errorHandling: f.errorHandling.value };
  if (f.duplicates.value === "skip") options.skipDuplicates = true;
  if (f.duplicates.value === "overwrite") options.overwriteExisting = true;
  if (f.batchSize.value) options.batchSize = Number(f.batchSize.value);
  if (f.dryRun.checked) options.dryRun = true;
  return options;
}

// Uploads with XMLHttpRequest, which reports the upload's progress (fetch does not).
function upload(path) {
  const f = $("import-form");
  const file = f.file.files[0];
  if (!file) return Promise.reject(new Error("choose a file first"));
  const form = new FormData();
  form.append("dataType", f.dataType.value);
  form.append("options", JSON.stringify(importOptions()));
  form.append("file", file, file.name);
  const bar = $("upload-progress");
  bar.value = 0;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", API + path);
    xhr.setRequestHeader("Authorization", "Bearer " + token());
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
    xhr.onerror = () => reject(new Error("the upload did not reach the server"));
    xhr.onload = async () => {
      bar.value = 100;
      // With ?wait, an operation that ended badly comes back with its error's status, as itself.
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* an error page */ }
      if (body && body.operationId) {
        resolve(body);
        return;
      }
      const err = await errorOf(xhr.status, xhr.responseText);
      if (err.status === 401) signOut(describe(err));
      reject(err);
    };
    xhr.send(form);
  });
}

function started(op, where) {
  ownRuns.add(op.operationId);
  $(where).replaceChildren(`Started ${op.type} `, el("strong", {}, op.operationId),
    ` of ${op.dataType}: ${op.status}. Follow it under Operations.`);
  updateRow(op);
  follow(op.operationId);
}

async function startImport() {
  $("import-result").textContent = "Uploading…";
  try {
    started(await upload("/import"), "import-result");
  } catch (err) {
    $("import-result").textContent = "";
    throw err;
  }
}

async function validateOnly() {
  $("import-result").textContent = "Uploading and checking…";
  $("validate-result").replaceChildren();
  let op;
  try {
    op = await upload("/validate?wait=" + 290);
  } catch (err) {
    $("import-result").textContent = "";
    throw err;
  }
  const c = op.counts;
  if (!isFinal(op.status)) {
    $("import-result").textContent = `Still checking (${op.operationId}); see its report under Operations.`;
    return;
  }
  $("import-result").textContent = op.valid
    ? `Every record is valid: ${number(c.read)} read, ${number(c.written)} would be written.`
    : `${number(c.rejected)} of ${number(c.read)} records are not valid` +
      (op.error ? ` (${op.error.message})` : "") + ".";
  if (op.errors.length === 0) return;
  $("validate-result").replaceChildren(
    op.errors.length < c.rejected ? el("p", {}, `The first ${op.errors.length} are listed.`) : "",
    el("div", { class: "scroll" }, el("table", { id: "bad-records" },
      el("thead", {}, el("tr", {}, ["Record", "Line", "Field", "Reason"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, op.errors.map((e) => el("tr", {},
        el("td", { class: "num" }, e.record ?? "–"), el("td", { class: "num" }, e.line ?? "–"),
        el("td", {}, e.field ?? "–"), el("td", {}, e.error)))))));
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

async function startExport() {
  const f = $("export-form");
  const options = { format: f.format.value, compression: f.compression.value };
  if (f.keyId.value.trim()) options.encryption = { enabled: true, keyId: f.keyId.value.trim() };
  const filters = {};
  if (f.start.value || f.end.value) {
    filters.dateRange = {};
    if (f.start.value) filters.dateRange.start = f.start.value + "T00:00:00Z";
    if (f.end.value) filters.dateRange.end = f.end.value + "T23:59:59.999Z";
  }
  if (list(f.types.value).length) filters.types = list(f.types.value);
  if (list(f.tags.value).length) filters.tags = list(f.tags.value);
  if (Object.keys(filters).length) options.filters = filters;
  if (f.split.value) options.splitLargeFiles = { enabled: true, maxSizeBytes: Number(f.split.value) };
  started(await api("POST", "/export", { dataType: f.dataType.value, options }), "export-result");
}

// ---- templates ------------------------------------------------------------------------------------------

async function loadTemplates() {
  const { templates } = await api("GET", "/templates");
  $("template-list").replaceChildren(...templates.map((t) => el("li", {},
    el("button", { type: "button", class: "secondary", onclick: guarded(() => viewTemplate(t.id)) }, t.id),
    ` ${t.source}` + (t.template ? ` — ${t.template.name} ${t.template.version}, ${t.template.fields.length} fields`
      : ` — ${t.problems.length} problems`))));
}

// The YAML with line numbers, each problem shown under the line it names.
function yamlWithProblems(text, problems) {
  const byLine = new Map();
  const unplaced = [];
  for (const p of problems || []) {
    const shown = (p.field ? `field ${p.field}: ` : "") + p.message;
    if (p.line) byLine.set(p.line, [...(byLine.get(p.line) || []), shown]);
    else unplaced.push(shown);
  }
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return el("div", {},
    unplaced.map((m) => el("p", { class: "error" }, m)),
    el("ol", { class: "yaml" }, lines.flatMap((line, i) => [
      el("li", { "data-line": i + 1 }, el("span", { class: "no" }, i + 1), line),
      ...(byLine.get(i + 1) || []).map((m) => el("li", { class: "problem", "data-problem-line": i + 1, role: "note" },
        `line ${i + 1}: ${m}`)),
    ])));
}

async function viewTemplate(id) {
  const t = await api("GET", "/templates/" + encodeURIComponent(id));
  const s = t.template;
  $("template-view").replaceChildren(el("h3", {}, `${t.id} (${t.source})`),
    s ? el("dl", {}, el("dt", {}, "Name"), el("dd", {}, `${s.name} ${s.version}`), el("dt", {}, "About"),
      el("dd", {}, s.description || "–"), el("dt", {}, "Schema"), el("dd", {}, s.schema || "none"),
      el("dt", {}, "Table"), el("dd", {}, s.table || "–")) : "",
    s ? el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Field", "Type", "Required"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, s.fields.map((f) => el("tr", {}, el("td", {}, f.name), el("td", {}, f.type || "any"),
        el("td", {}, f.required ? "yes" : "no")))))) : "",
    yamlWithProblems(t.yaml || "", t.problems));
}

async function addTemplate() {
  const file = $("template-file").files[0];
  if (!file) throw new Error("choose a template file first");
  const text = await file.text();
  const type = /\.json$/i.test(file.name) ? "application/json" : "application/yaml";
  $("template-result").textContent = "";
  try {
    const t = await api("POST", "/templates", text, type);
    $("template-result").textContent = `Stored template ${t.id}.`;
    await loadTemplates();
    await viewTemplate(t.id);
  } catch (err) {
    if (!(err instanceof ApiError) || err.code !== "template_invalid") throw err;
    $("template-result").textContent = `${file.name} was not stored: ${err.message}`;
    $("template-view").replaceChildren(el("h3", {}, file.name),
      yamlWithProblems(text, (err.details && err.details.problems) || []));
  }
}

// ---- wiring ---------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  for (const b of document.querySelectorAll("nav button[data-view]")) b.addEventListener("click", () => show(b.dataset.view));
  $("history-filters").addEventListener("submit", guarded(() => { historyOffset = 0; return loadHistory(); }));
  $("prev").addEventListener("click", guarded(() => { historyOffset = Math.max(0, historyOffset - HISTORY_PAGE); return loadHistory(); }));
  $("next").addEventListener("click", guarded(() => { historyOffset += HISTORY_PAGE; return loadHistory(); }));
  $("import-form").addEventListener("submit", guarded(startImport));
  $("validate-submit").addEventListener("click", guarded(validateOnly));
  $("export-form").addEventListener("submit", guarded(startExport));
  $("template-form").addEventListener("submit", guarded(addTemplate));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) $("import-file").files = e.dataTransfer.files;
  });
  setInterval(() => { if (token() && !$("operations").hidden) refreshActive().catch((err) => notice(describe(err))); }, 2000);
  if (token()) enter();
  else $("token").focus();
});
