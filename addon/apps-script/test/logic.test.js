// The pure logic of Logic.js, loaded as a node module.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const L = require("../Logic.js");
const F = require("./fixtures.js");

const BASE = "https://docket.example.com";

function widgets(model) {
  return model.sections.flatMap((s) => s.widgets);
}
function section(model, header) {
  return model.sections.find((s) => s.header === header);
}
function button(model, text) {
  for (const w of widgets(model)) for (const b of w.buttons || []) if (b.text === text) return b;
  return null;
}

// ---------------------------------------------------------------------------
// requests

test("buildContextRequest posts the raw message as JSON with the identity token", () => {
  const req = L.buildContextRequest(BASE + "/", "tok-1", "UmF3", "thread-f:1659728385805497000", "msg-f:1659728385805497086");
  assert.equal(req.url, "https://docket.example.com/v1/addon/context");
  assert.equal(req.options.method, "post");
  assert.equal(req.options.contentType, "application/json");
  assert.deepEqual(req.options.headers, { Authorization: "Bearer tok-1" });
  assert.equal(req.options.muteHttpExceptions, true);
  assert.deepEqual(JSON.parse(req.options.payload), {
    raw: "UmF3",
    gmail_message_id: "17088a2c5b91b2fe",
    gmail_thread_id: (1659728385805497000n).toString(16),
  });
});

test("buildContextRequest leaves out Gmail ids it does not have", () => {
  const req = L.buildContextRequest(BASE, "tok", "UmF3");
  assert.deepEqual(JSON.parse(req.options.payload), { raw: "UmF3" });
});

test("buildContextRequest keeps a path prefix of the docket URL", () => {
  assert.equal(L.buildContextRequest("https://firm.example/docket//", "t", "x").url, "https://firm.example/docket/v1/addon/context");
});

test("buildFilingRequest sends targets, attachment indices and note", () => {
  const req = L.buildFilingRequest(BASE, "tok-2", {
    raw: "UmF3",
    gmailMessageId: "17088a2c5b91b2fe",
    gmailThreadId: "17088a2c5b91b2f0",
    targets: [
      { kind: "matter", id: "M-2024-017", title: "ignored" },
      { kind: "contract", id: "K-2025-003" },
    ],
    attachments: [0, 2],
    note: "Counter-offer",
  });
  assert.equal(req.url, BASE + "/v1/filings");
  assert.equal(req.options.method, "post");
  assert.equal(req.options.contentType, "application/json");
  assert.equal(req.options.headers.Authorization, "Bearer tok-2");
  assert.equal(req.options.muteHttpExceptions, true);
  assert.deepEqual(JSON.parse(req.options.payload), {
    raw: "UmF3",
    gmail_message_id: "17088a2c5b91b2fe",
    gmail_thread_id: "17088a2c5b91b2f0",
    targets: [
      { kind: "matter", id: "M-2024-017" },
      { kind: "contract", id: "K-2025-003" },
    ],
    attachments: [0, 2],
    note: "Counter-offer",
  });
});

test("buildFilingRequest defaults to all attachments and omits an empty note", () => {
  const req = L.buildFilingRequest(BASE, "t", { raw: "UmF3", targets: [{ kind: "case", id: "C-88" }], note: "  " });
  assert.deepEqual(JSON.parse(req.options.payload), { raw: "UmF3", targets: [{ kind: "case", id: "C-88" }], attachments: "all" });
  const all = L.buildFilingRequest(BASE, "t", { raw: "UmF3", targets: [], attachments: "all" });
  assert.equal(JSON.parse(all.options.payload).attachments, "all");
  const none = L.buildFilingRequest(BASE, "t", { raw: "UmF3", targets: [], attachments: [] });
  assert.deepEqual(JSON.parse(none.options.payload).attachments, []);
});

test("buildSearchRequest is a GET with the query escaped and a limit of 20", () => {
  const req = L.buildSearchRequest(BASE, "tok-3", " Acme & Widget ");
  assert.equal(req.url, BASE + "/v1/records?q=Acme%20%26%20Widget&limit=20");
  assert.equal(req.options.method, "get");
  assert.deepEqual(req.options.headers, { Authorization: "Bearer tok-3" });
  assert.equal(req.options.muteHttpExceptions, true);
  assert.equal(req.options.payload, undefined);
});

test("a missing docket URL is refused", () => {
  assert.throws(() => L.buildSearchRequest("", "t", "x"), /docket URL/);
});

test("payloadTooLarge flags payloads UrlFetch would refuse", () => {
  assert.equal(L.payloadTooLarge(L.buildContextRequest(BASE, "t", "x")), false);
  assert.equal(L.payloadTooLarge(L.buildContextRequest(BASE, "t", "x".repeat(L.MAX_URLFETCH_PAYLOAD_CHARS))), true);
  assert.equal(L.payloadTooLarge(L.buildSearchRequest(BASE, "t", "x")), false);
});

// ---------------------------------------------------------------------------
// responses

test("parseResponse returns the JSON of a 2xx answer", () => {
  assert.deepEqual(L.parseResponse(200, '{"records":[]}'), { ok: true, status: 200, data: { records: [] } });
  assert.equal(L.parseResponse(201, '{"filings":[]}').ok, true);
});

test("parseResponse reports a 2xx answer that is not JSON", () => {
  for (const body of ["<html>login</html>", "", null]) {
    const r = L.parseResponse(200, body);
    assert.equal(r.ok, false);
    assert.match(r.error, /could not read/);
  }
});

test("parseResponse prefers the problem+json detail", () => {
  const r = L.parseResponse(404, F.problem(404, "not-found", "Not found", "No matter M-9 in your firm."));
  assert.deepEqual(r, { ok: false, status: 404, error: "No matter M-9 in your firm.", problemType: "urn:docket:problem:not-found" });
  const closed = L.parseResponse(409, F.problem(409, "record-closed", "Closed", "matter M-2024-018 is closed"));
  assert.equal(closed.error, "matter M-2024-018 is closed");
});

test("parseResponse falls back to a sentence per status", () => {
  const cases = [
    [401, /sign-in/],
    [403, /not allowed/],
    [404, /not find/],
    [413, /too large/],
    [429, /[Tt]ry again/],
    [500, /[Tt]ry again/],
    [503, /[Tt]ry again/],
  ];
  for (const [status, re] of cases) {
    for (const body of ["", "<html>Bad gateway</html>", '{"title":"x"}', '{"detail":""}', "null"]) {
      const r = L.parseResponse(status, body);
      assert.equal(r.ok, false, `${status} ${body}`);
      assert.equal(r.status, status);
      assert.match(r.error, re, `${status} ${body}`);
    }
  }
  assert.match(L.parseResponse(418, "").error, /418/);
});

// ---------------------------------------------------------------------------
// card models

test("context card: nothing filed, suggestions with their reasons, best one ticked", () => {
  const model = L.contextToCardModel(F.contextWithSuggestions(), { messageId: "msg-f:1", threadId: "thread-f:2" });
  assert.equal(model.header.title, "Counter-offer <draft>");
  assert.equal(model.header.subtitle, "Gina Counsel <gc@acme.com>");
  assert.equal(section(model, "Already filed"), undefined);

  const suggestions = section(model, "Suggestions");
  const explained = suggestions.widgets.filter((w) => w.type === "decoratedText");
  assert.deepEqual(
    explained.map((w) => [w.topLabel, w.text, w.bottomLabel]),
    [
      // The likelihood in a word, then the two strongest reasons; "unsure" says nothing.
      ["matter", "M-2024-017 · Acme v. Widget", "likely: same thread as a message filed to M-2024-017; from a contact of M-2024-017"],
      ["contract", "K-2025-003 · Widget lease", "subject mentions K-2025-003"],
    ]
  );
  const box = suggestions.widgets.find((w) => w.type === "checkboxes");
  assert.equal(box.name, "targets");
  assert.deepEqual(box.items, [
    { text: "M-2024-017 · Acme v. Widget", value: "matter:M-2024-017", selected: true },
    { text: "K-2025-003 · Widget lease", value: "contract:K-2025-003", selected: false },
  ]);

  const file = button(model, "File");
  assert.equal(file.functionName, "onFile");
  assert.deepEqual(file.parameters, { messageId: "msg-f:1", threadId: "thread-f:2", attachmentCount: "3" });
  assert.ok(widgets(model).some((w) => w.type === "textInput" && w.name === "note"));
  const search = button(model, "Search");
  assert.equal(search.functionName, "onSearch");
  assert.deepEqual(JSON.parse(search.parameters.attachments).map((a) => a.name), ["offer.pdf", "logo.png", "terms.docx"]);
  for (const b of [file, search]) for (const v of Object.values(b.parameters)) assert.equal(typeof v, "string");
});

test("context card: several attachments, all ticked by default", () => {
  const model = L.contextToCardModel(F.contextWithSuggestions());
  const box = section(model, "Attachments").widgets[0];
  assert.equal(box.type, "checkboxes");
  assert.equal(box.name, "attachments");
  assert.deepEqual(box.items, [
    { text: "offer.pdf (51 KB)", value: "0", selected: true },
    { text: "logo.png (900 B)", value: "1", selected: true },
    { text: "terms.docx (2.3 MB)", value: "2", selected: true },
  ]);
});

test("context card: already filed is listed and not ticked again", () => {
  const model = L.contextToCardModel(F.contextAlreadyFiled());
  const filed = section(model, "Already filed").widgets;
  assert.deepEqual(filed, [
    { type: "decoratedText", topLabel: "matter", text: "M-2024-017 · Acme v. Widget", bottomLabel: "by alice@demo.test · 2024-05-01 10:00 UTC" },
  ]);
  const box = section(model, "Suggestions").widgets.find((w) => w.type === "checkboxes");
  assert.deepEqual(box.items, [
    { text: "M-2024-017 · Acme v. Widget (already filed)", value: "matter:M-2024-017", selected: false },
    { text: "C-88 · Regina v. Smith", value: "case:C-88", selected: true },
  ]);
});

test("context card: no attachments says so and has no check boxes", () => {
  const model = L.contextToCardModel(F.contextAlreadyFiled());
  assert.deepEqual(section(model, "Attachments").widgets, [{ type: "paragraph", text: "No attachments." }]);
  assert.equal(button(model, "File").parameters.attachmentCount, "0");
});

test("context card: without suggestions it offers a search and no File button", () => {
  const model = L.contextToCardModel(F.contextNothing(), { messageId: "m" });
  assert.equal(model.header.title, "(no subject)");
  assert.match(section(model, "Suggestions").widgets[0].text, /no suggestion/);
  assert.equal(button(model, "File"), null);
  assert.equal(button(model, "Search").parameters.messageId, "m");
  assert.ok(widgets(model).some((w) => w.type === "textInput" && w.name === "q"));
});

test("filing result: created filings say Filed to …", () => {
  const model = L.filingResultToCardModel(F.filingAnswer(true, [F.acme, F.widgetLease]), { messageId: "m", threadId: "t" });
  assert.equal(model.header.title, "Filed");
  const texts = widgets(model).filter((w) => w.type === "decoratedText");
  assert.deepEqual(
    texts.map((w) => w.text),
    ["Filed to M-2024-017 · Acme v. Widget", "Filed to K-2025-003 · Widget lease"]
  );
  assert.equal(texts[0].bottomLabel, "by bob@demo.test · 2024-05-02 09:30 UTC · 1 attachment");
  assert.equal(model.notification, "Filed to 2 records");
  assert.deepEqual(button(model, "Back to the message").parameters, { messageId: "m", threadId: "t" });
});

test("filing result: an existing filing says Already filed to …", () => {
  const model = L.filingResultToCardModel(F.filingAnswer(false));
  assert.equal(model.header.title, "Already filed");
  assert.equal(widgets(model)[0].text, "Already filed to M-2024-017 · Acme v. Widget");
  assert.equal(model.notification, "Already filed to M-2024-017");
  assert.equal(L.filingResultToCardModel(F.filingAnswer(true)).notification, "Filed to M-2024-017");
});

test("search results: records become targets with the filing form", () => {
  const records = { records: [{ ...F.acme, client: "Acme Corp", status: "open" }, { ...F.c88, client: "Crown", status: "closed" }] };
  const model = L.searchResultsToCardModel(records, {
    query: "acme",
    attachments: [{ index: 0, name: "offer.pdf", size: 10 }],
    messageId: "m",
  });
  const box = widgets(model).find((w) => w.name === "targets");
  assert.deepEqual(box.items, [
    { text: "M-2024-017 · Acme v. Widget (Acme Corp)", value: "matter:M-2024-017", selected: false },
    { text: "C-88 · Regina v. Smith (Crown, closed)", value: "case:C-88", selected: false },
  ]);
  assert.equal(button(model, "File").parameters.attachmentCount, "1");
  assert.equal(button(model, "Search").parameters.view, "search");
  const empty = L.searchResultsToCardModel({ records: [] }, { query: "zzz" });
  assert.equal(button(empty, "File"), null);
  assert.match(widgets(empty)[0].text, /zzz/);
});

// ---------------------------------------------------------------------------
// ids and form inputs

test("normaliseMessageId turns Gmail's decimal ids into the API's hex", () => {
  assert.equal(L.normaliseMessageId("msg-f:1659728385805497086"), "17088a2c5b91b2fe");
  assert.equal(L.normaliseMessageId("msg-a:1659728385805497086"), "17088a2c5b91b2fe");
  assert.equal(L.normaliseMessageId("thread-f:1659728385805497086"), "17088a2c5b91b2fe");
  assert.equal(L.normaliseMessageId("1659728385805497086"), "17088a2c5b91b2fe");
  assert.equal(L.normaliseMessageId("msg-f:18446744073709551615"), "ffffffffffffffff");
});

test("normaliseMessageId passes hex ids through, lowercased", () => {
  assert.equal(L.normaliseMessageId("17088a2c5b91b2fe"), "17088a2c5b91b2fe");
  assert.equal(L.normaliseMessageId("17088A2C5B91B2FE"), "17088a2c5b91b2fe");
  assert.equal(L.normaliseMessageId("1708812345678901"), "1708812345678901");
  for (const bad of [undefined, null, "", "  ", "msg-f:", "not an id"]) assert.equal(L.normaliseMessageId(bad), null);
});

const inputs = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, { stringInputs: { value: v } }]));

test("formInputsToSelection reads several targets, ticked attachments and the note", () => {
  const sel = L.formInputsToSelection(
    inputs({ targets: ["matter:M-2024-017", "contract:K-2025-003", "matter:M-2024-017"], attachments: ["2", "0"], note: ["  Counter-offer "] }),
    3
  );
  assert.deepEqual(sel, {
    targets: [
      { kind: "matter", id: "M-2024-017" },
      { kind: "contract", id: "K-2025-003" },
    ],
    attachments: [0, 2],
    note: "Counter-offer",
  });
});

test("formInputsToSelection: all attachments unticked means none", () => {
  // Gmail leaves a check-box group with nothing ticked out of formInputs.
  assert.deepEqual(L.formInputsToSelection(inputs({ targets: ["case:C-88"] }), 2), { targets: [{ kind: "case", id: "C-88" }], attachments: [] });
});

test("formInputsToSelection: every attachment ticked means all", () => {
  assert.equal(L.formInputsToSelection(inputs({ targets: ["case:C-88"], attachments: ["1", "0"] }), "2").attachments, "all");
  assert.deepEqual(L.formInputsToSelection(inputs({ attachments: ["1", "0"] })).attachments, [0, 1]);
});

test("formInputsToSelection ignores malformed values and reads the legacy shape", () => {
  const sel = L.formInputsToSelection(inputs({ targets: ["bogus", "person:x", "matter:", "case:C:88"], attachments: ["x", "-1", "1"], note: [""] }));
  assert.deepEqual(sel, { targets: [{ kind: "case", id: "C:88" }], attachments: [1] });
  assert.deepEqual(L.formInputsToSelection({ targets: ["matter:M-1"] }).targets, [{ kind: "matter", id: "M-1" }]);
  assert.deepEqual(L.formInputsToSelection(undefined), { targets: [], attachments: [] });
});
