// Code.js and Cards.js, run unchanged in a vm context against fake Apps Script services.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const S = require("./stubs.js");
const F = require("./fixtures.js");

const EVENT_MESSAGE_ID = "msg-f:1659728385805497086";
const EVENT_THREAD_ID = "thread-f:1659728385805497000";
const HEX_MESSAGE_ID = "17088a2c5b91b2fe";
const HEX_THREAD_ID = (1659728385805497000n).toString(16);

const MESSAGES = {
  [EVENT_MESSAGE_ID]: { raw: F.RAW_MESSAGE, id: HEX_MESSAGE_ID, threadId: HEX_THREAD_ID },
};

function gmailEvent() {
  return {
    commonEventObject: { hostApp: "GMAIL", platform: "WEB" },
    gmail: { messageId: EVENT_MESSAGE_ID, threadId: EVENT_THREAD_ID, accessToken: "gmail-access-token" },
  };
}

function decodeBase64url(s) {
  return Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64");
}

/** Runs an Apps Script function in the add-on and returns its answer as plain data. */
function run(addon, fn, event) {
  return S.plain(addon.ctx[fn](event));
}

test("onGmailMessage reads the open message, sends it with the identity token and shows the suggestions", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: F.contextWithSuggestions() }] });
  const card = run(addon, "onGmailMessage", gmailEvent());

  assert.deepEqual(addon.gmail.accessTokens, ["gmail-access-token"]);
  assert.equal(addon.urlFetch.requests.length, 1);
  const { url, options } = addon.urlFetch.requests[0];
  assert.equal(url, "https://docket.example.com/v1/addon/context");
  assert.equal(options.method, "post");
  assert.equal(options.contentType, "application/json");
  assert.equal(options.muteHttpExceptions, true);
  assert.equal(options.headers.Authorization, "Bearer id-token-for-bob");
  const body = JSON.parse(options.payload);
  assert.match(body.raw, /^[A-Za-z0-9_-]+=*$/, "base64url");
  assert.deepEqual(decodeBase64url(body.raw), Buffer.from(F.RAW_MESSAGE, "utf8"), "the message's UTF-8 bytes");
  assert.equal(body.gmail_message_id, HEX_MESSAGE_ID);
  assert.equal(body.gmail_thread_id, HEX_THREAD_ID);

  assert.equal(card.kind, "Card");
  assert.equal(card.header.title, "Counter-offer <draft>");
  const texts = S.textsOf(card);
  assert.ok(texts.includes("M-2024-017 · Acme v. Widget"));
  assert.ok(texts.includes("likely: same thread as a message filed to M-2024-017; from a contact of M-2024-017"));
  const targets = S.findInput(card, "targets");
  assert.equal(targets.type, "CHECK_BOX");
  assert.deepEqual(
    targets.items.map((i) => [i.value, i.selected]),
    [
      ["matter:M-2024-017", true],
      ["contract:K-2025-003", false],
    ]
  );
  const attachments = S.findInput(card, "attachments");
  assert.deepEqual(
    attachments.items.map((i) => i.selected),
    [true, true, true]
  );
  const file = S.findButton(card, "File");
  assert.equal(file.onClickAction.functionName, "onFile");
  assert.equal(file.textButtonStyle, "FILLED");
  assert.deepEqual(file.onClickAction.parameters, { messageId: EVENT_MESSAGE_ID, threadId: EVENT_THREAD_ID, attachmentCount: "3" });
  assert.equal(S.findInput(card, "note").multiline, true);
});

test("inline parts of the HTML body (signature logos) are offered unticked", () => {
  const ctx = F.contextWithSuggestions();
  ctx.attachments = [
    { index: 0, name: "image001.png", content_type: "image/png", size: 70, inline: true },
    { index: 1, name: "brief.pdf", content_type: "application/pdf", size: 61, inline: false },
  ];
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: ctx }] });
  const card = run(addon, "onGmailMessage", gmailEvent());
  assert.deepEqual(
    S.findInput(card, "attachments").items.map((i) => [i.value, i.selected]),
    [
      ["0", false],
      ["1", true],
    ]
  );
});

test("card text from the message is escaped, labels are not", () => {
  const ctx = F.contextWithSuggestions();
  ctx.already_filed = [{ filing_id: "f", target: { kind: "matter", id: "M-1", title: "A <b>&</b> B" }, filed_by: "x@y", filed_at: "t" }];
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: ctx }] });
  const card = run(addon, "onGmailMessage", gmailEvent());
  assert.ok(S.textsOf(card).includes("M-1 · A &lt;b&gt;&amp;&lt;/b&gt; B"));
});

test("onFile posts the ticked targets, attachments and note and answers Filed to …", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 201, body: F.filingAnswer(true, [F.acme, F.widgetLease]) }] });
  const event = S.actionEvent({
    formInputs: { targets: ["matter:M-2024-017", "contract:K-2025-003"], attachments: ["0", "2"], note: ["Counter-offer"] },
    parameters: { messageId: EVENT_MESSAGE_ID, threadId: EVENT_THREAD_ID, attachmentCount: "3" },
    gmail: gmailEvent().gmail,
  });
  const response = run(addon, "onFile", event);

  assert.deepEqual(addon.gmail.accessTokens, ["gmail-access-token"]);
  const { url, options } = addon.urlFetch.requests[0];
  assert.equal(url, "https://docket.example.com/v1/filings");
  assert.equal(options.headers.Authorization, "Bearer id-token-for-bob");
  assert.equal(options.muteHttpExceptions, true);
  const body = JSON.parse(options.payload);
  assert.deepEqual(decodeBase64url(body.raw), Buffer.from(F.RAW_MESSAGE, "utf8"));
  assert.deepEqual(
    { ...body, raw: undefined },
    {
      raw: undefined,
      gmail_message_id: HEX_MESSAGE_ID,
      gmail_thread_id: HEX_THREAD_ID,
      targets: [
        { kind: "matter", id: "M-2024-017" },
        { kind: "contract", id: "K-2025-003" },
      ],
      attachments: [0, 2],
      note: "Counter-offer",
    }
  );

  assert.equal(response.kind, "ActionResponse");
  assert.equal(response.notification.text, "Filed to 2 records");
  const steps = response.navigation.steps;
  assert.deepEqual(steps[0], { popToRoot: true });
  const card = steps[1].updateCard;
  assert.ok(S.textsOf(card).includes("Filed to M-2024-017 · Acme v. Widget"));
  assert.ok(S.textsOf(card).includes("Filed to K-2025-003 · Widget lease"));
  const undo = S.findButton(card, "Undo");
  assert.equal(undo.onClickAction.functionName, "onUndo");
  assert.deepEqual(undo.onClickAction.parameters, { messageId: EVENT_MESSAGE_ID, threadId: EVENT_THREAD_ID, filings: "f-10,f-11" });
});

test("onUndo deletes each filing just made and says which records it left; a refusal is shown", () => {
  const undone = { id: "f-10", target: "matter:M-2024-017", title: "Acme v. Widget", also_removed: ["matter:M-7"], message_removed: false };
  const refusal = F.problem(409, "undo-expired", "Conflict", "a filing can be undone for 10 minutes after it was made; ask an admin to remove it");
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: undone }, { status: 409, body: refusal }] });
  const response = run(addon, "onUndo", S.actionEvent({ parameters: { messageId: EVENT_MESSAGE_ID, filings: "f-10,f-11" }, gmail: gmailEvent().gmail }));

  const calls = addon.urlFetch.requests.map((r) => [r.options.method, r.url, r.options.headers.Authorization]);
  assert.deepEqual(calls, [
    ["delete", "https://docket.example.com/v1/filings/f-10", "Bearer id-token-for-bob"],
    ["delete", "https://docket.example.com/v1/filings/f-11", "Bearer id-token-for-bob"],
  ]);
  assert.equal(response.notification.text, "Filing undone: M-2024-017");
  const card = response.navigation.steps[1].updateCard;
  assert.equal(card.header.title, "Filing undone");
  const texts = S.textsOf(card);
  assert.ok(texts.includes("M-2024-017 · Acme v. Widget"), texts.join("\n"));
  assert.ok(texts.includes("with the rules' filings to matter:M-7"), texts.join("\n"));
  assert.ok(texts.some((t) => /can be undone for 10 minutes/.test(t)), texts.join("\n"));
  assert.equal(S.findButton(card, "Back to the message").onClickAction.functionName, "onRefresh");
});

test("onUndo refused for every filing says Not undone with docket's reason", () => {
  const refusal = F.problem(409, "legal-hold", "Conflict", "this filing to matter:M-2024-017 is under a legal hold and cannot be removed until the hold is released");
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 409, body: refusal }] });
  const response = run(addon, "onUndo", S.actionEvent({ parameters: { messageId: EVENT_MESSAGE_ID, filings: "f-10" }, gmail: gmailEvent().gmail }));
  assert.match(response.notification.text, /under a legal hold/);
  assert.equal(response.navigation.steps[1].updateCard.header.title, "Not undone");
});

test("with the firm's label prefix, the File button carries it and filing labels the message in Gmail", () => {
  const context = { ...F.contextWithSuggestions(), gmail_label_prefix: "Filed" };
  const opened = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: context }] });
  const card = run(opened, "onGmailMessage", gmailEvent());
  assert.equal(S.findButton(card, "File").onClickAction.parameters.labelPrefix, "Filed");

  const answer = F.filingAnswer(true, [F.acme, F.widgetLease]);
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 201, body: answer }], gmailAdvanced: { labels: [{ id: "Label_9", name: "Filed" }] } });
  const event = S.actionEvent({
    formInputs: { targets: ["matter:M-2024-017", "contract:K-2025-003"] },
    parameters: { messageId: EVENT_MESSAGE_ID, threadId: EVENT_THREAD_ID, attachmentCount: "0", labelPrefix: "Filed" },
    gmail: gmailEvent().gmail,
  });
  const response = run(addon, "onFile", event);
  const g = addon.gmailAdvanced;
  assert.deepEqual(g.calls, [
    "labels.list me",
    "labels.create me Filed/M-2024-017",
    "labels.create me Filed/K-2025-003",
    `messages.modify me ${HEX_MESSAGE_ID}`,
  ], "the parent Filed exists already; each reference's label is made once");
  assert.deepEqual(S.plain(g.modified), [{ id: HEX_MESSAGE_ID, addLabelIds: ["Label_2", "Label_3"] }]);
  const filedCard = response.navigation.steps[1].updateCard;
  assert.ok(S.textsOf(filedCard).includes("Labelled Filed/M-2024-017, Filed/K-2025-003 in Gmail"), S.textsOf(filedCard).join("\n"));
  assert.equal(S.findButton(filedCard, "Undo").onClickAction.parameters.labelPrefix, "Filed");

  // Undo takes the label off.
  const undone = { id: "f-10", target: "matter:M-2024-017", title: "Acme v. Widget", also_removed: [], message_removed: true };
  const again = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: undone }], gmailAdvanced: { labels: [{ id: "Label_9", name: "Filed" }, { id: "Label_2", name: "Filed/M-2024-017" }] } });
  const r = run(again, "onUndo", S.actionEvent({ parameters: { messageId: EVENT_MESSAGE_ID, filings: "f-10", labelPrefix: "Filed" }, gmail: gmailEvent().gmail }));
  assert.deepEqual(S.plain(again.gmailAdvanced.modified), [{ id: HEX_MESSAGE_ID, removeLabelIds: ["Label_2"] }]);
  assert.ok(S.textsOf(r.navigation.steps[1].updateCard).includes("Label Filed/M-2024-017 taken off in Gmail"));
});

test("labels are matched without case, a lost create race reuses the label, and a reference's / makes no level", () => {
  const answer = { filings: [{ ...F.filingAnswer(true).filings[0], target: { kind: "case", id: "C/7", title: "Slash" } }] };
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 201, body: answer }], gmailAdvanced: { labels: [{ id: "Label_1", name: "filed" }] } });
  // Another filing makes "Filed/C-7" between the list and the create.
  const g = addon.gmailAdvanced;
  const create = g.Users.Labels.create;
  g.Users.Labels.create = (resource, user) => {
    g.labels.push({ id: "Label_7", name: resource.name });
    return create(resource, user);
  };
  const response = run(addon, "onFile", S.actionEvent({ formInputs: { targets: ["case:C/7"] }, parameters: { messageId: EVENT_MESSAGE_ID, labelPrefix: "Filed" }, gmail: gmailEvent().gmail }));
  assert.deepEqual(S.plain(g.modified), [{ id: HEX_MESSAGE_ID, addLabelIds: ["Label_7"] }]);
  assert.ok(S.textsOf(response.navigation.steps[1].updateCard).includes("Labelled Filed/C-7 in Gmail"));
  assert.ok(!g.calls.includes("labels.create me Filed"), "the existing 'filed' is the parent");
});

test("without gmail.modify the filing stands and the card says why; without a prefix Gmail is not asked", () => {
  const answer = F.filingAnswer(true);
  const refused = S.loadAddon({ messages: MESSAGES, responses: [{ status: 201, body: answer }], gmailAdvanced: { granted: false } });
  const event = (params) => S.actionEvent({ formInputs: { targets: ["matter:M-2024-017"] }, parameters: { messageId: EVENT_MESSAGE_ID, ...params }, gmail: gmailEvent().gmail });
  const response = run(refused, "onFile", event({ labelPrefix: "Filed" }));
  assert.equal(response.notification.text, "Filed to M-2024-017");
  assert.ok(S.textsOf(response.navigation.steps[1].updateCard).some((t) => /needs the gmail\.modify scope/.test(t)));

  const off = S.loadAddon({ messages: MESSAGES, responses: [{ status: 201, body: answer }] });
  run(off, "onFile", event({}));
  assert.deepEqual(off.gmailAdvanced.calls, []);
});

test("an existing filing offers no Undo", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: F.filingAnswer(false) }] });
  const response = run(
    addon,
    "onFile",
    S.actionEvent({ formInputs: { targets: ["matter:M-2024-017"] }, parameters: { messageId: EVENT_MESSAGE_ID }, gmail: gmailEvent().gmail })
  );
  assert.equal(S.findButton(response.navigation.steps[1].updateCard, "Undo"), null);
});

test("onFile with every attachment ticked asks for all of them; an existing filing says Already filed", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: F.filingAnswer(false) }] });
  const response = run(
    addon,
    "onFile",
    S.actionEvent({
      formInputs: { targets: ["matter:M-2024-017"], attachments: ["0", "1"] },
      parameters: { messageId: EVENT_MESSAGE_ID, attachmentCount: "2" },
      gmail: gmailEvent().gmail,
    })
  );
  const body = JSON.parse(addon.urlFetch.requests[0].options.payload);
  assert.equal(body.attachments, "all");
  assert.equal(body.note, undefined);
  assert.equal(response.notification.text, "Already filed to M-2024-017");
  assert.ok(S.textsOf(response.navigation.steps[1].updateCard).includes("Already filed to M-2024-017 · Acme v. Widget"));
});

test("onFile with no record ticked asks for one and calls nobody", () => {
  const addon = S.loadAddon({ messages: MESSAGES });
  const response = run(addon, "onFile", S.actionEvent({ parameters: { messageId: EVENT_MESSAGE_ID }, gmail: gmailEvent().gmail }));
  assert.equal(addon.urlFetch.requests.length, 0);
  assert.match(response.notification.text, /at least one record/);
  assert.equal(response.navigation, undefined);
});

test("onSearch looks records up and pushes a card to file to them", () => {
  const records = { records: [{ ...F.acme, client: "Acme Corp", status: "open" }] };
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: records }] });
  const response = run(
    addon,
    "onSearch",
    S.actionEvent({
      formInputs: { q: ["acme "] },
      parameters: { messageId: EVENT_MESSAGE_ID, threadId: EVENT_THREAD_ID, attachments: JSON.stringify([{ index: 0, name: "offer.pdf", size: 5 }]) },
      gmail: gmailEvent().gmail,
    })
  );
  const { url, options } = addon.urlFetch.requests[0];
  assert.equal(url, "https://docket.example.com/v1/records?q=acme&limit=20");
  assert.equal(options.method, "get");
  assert.equal(options.headers.Authorization, "Bearer id-token-for-bob");
  const card = response.navigation.steps[0].pushCard;
  assert.deepEqual(S.findInput(card, "targets").items, [{ text: "M-2024-017 · Acme v. Widget (Acme Corp)", value: "matter:M-2024-017", selected: true }]);
  assert.deepEqual(S.findInput(card, "attachments").items, [{ text: "offer.pdf (5 B)", value: "0", selected: true }]);
  assert.equal(S.findButton(card, "File").onClickAction.parameters.messageId, EVENT_MESSAGE_ID);
  assert.equal(S.findInput(card, "q").value, "acme");
});

test("onSearch with an empty query asks for one", () => {
  const addon = S.loadAddon({ messages: MESSAGES });
  const response = run(addon, "onSearch", S.actionEvent({ formInputs: { q: ["  "] } }));
  assert.equal(addon.urlFetch.requests.length, 0);
  assert.match(response.notification.text, /search for/);
});

test("an HTTP 500 from docket gives an error card, not a throw", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 500, body: "<html>oops</html>" }] });
  const card = run(addon, "onGmailMessage", gmailEvent());
  assert.equal(card.header.title, "docket could not do that");
  assert.ok(S.textsOf(card).some((t) => /HTTP 500\). Try again/.test(t)));
  assert.equal(S.findButton(card, "Try again").onClickAction.functionName, "onRefresh");
});

test("a problem+json detail is shown as is", () => {
  const addon = S.loadAddon({
    messages: MESSAGES,
    responses: [{ status: 404, body: F.problem(404, "not-found", "Not found", "There is no matter M-9 in your firm.") }],
  });
  const response = run(
    addon,
    "onFile",
    S.actionEvent({ formInputs: { targets: ["matter:M-9"] }, parameters: { messageId: EVENT_MESSAGE_ID }, gmail: gmailEvent().gmail })
  );
  assert.equal(response.notification.text, "There is no matter M-9 in your firm.");
  assert.ok(S.textsOf(response.navigation.steps[0].pushCard).includes("There is no matter M-9 in your firm."));
});

test("a thrown UrlFetch exception gives an error card, not a throw", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [new Error("Address unavailable: https://docket.example.com/v1/addon/context")] });
  const card = run(addon, "onGmailMessage", gmailEvent());
  assert.ok(S.textsOf(card).some((t) => /Could not reach docket \(Address unavailable/.test(t)));

  const again = S.loadAddon({ messages: MESSAGES, responses: [new Error("Timeout")] });
  const response = run(
    again,
    "onFile",
    S.actionEvent({ formInputs: { targets: ["matter:M-2024-017"] }, parameters: { messageId: EVENT_MESSAGE_ID }, gmail: gmailEvent().gmail })
  );
  assert.match(response.notification.text, /Could not reach docket \(Timeout\)/);
  assert.equal(response.navigation.steps[0].pushCard.header.title, "docket could not do that");
});

test("an unset DOCKET_URL gives a card that says how to fix it", () => {
  const addon = S.loadAddon({ messages: MESSAGES, properties: {} });
  for (const fn of ["onHomepage", "onGmailMessage"]) {
    const card = run(addon, fn, gmailEvent());
    assert.ok(S.textsOf(card).some((t) => /DOCKET_URL/.test(t)), fn);
  }
  assert.equal(addon.urlFetch.requests.length, 0);
});

test("no identity token, or a message Gmail will not give, gives an error card", () => {
  const noToken = S.loadAddon({ messages: MESSAGES, identityToken: null });
  assert.ok(S.textsOf(run(noToken, "onGmailMessage", gmailEvent())).some((t) => /openid/.test(t)));
  assert.equal(noToken.urlFetch.requests.length, 0);

  const unknown = S.loadAddon({ messages: {} });
  assert.ok(S.textsOf(run(unknown, "onGmailMessage", gmailEvent())).some((t) => /Could not read this email/.test(t)));
});

function listedFiling(subject, target, viewPath) {
  const f = F.filingAnswer(true, [target]).filings[0];
  return { ...f, message: { ...f.message, subject }, view_path: viewPath };
}

test("onHomepage says what docket is, offers a search of filed mail and lists your recent filings", () => {
  const recent = { filings: [listedFiling("Draft settlement", F.acme, "/view/filings/f-10?t=cap")] };
  const addon = S.loadAddon({ responses: [{ status: 200, body: recent }] });
  const card = run(addon, "onHomepage", { commonEventObject: { hostApp: "GMAIL" } });
  assert.equal(addon.urlFetch.requests[0].url, "https://docket.example.com/v1/filings?limit=5&mine=true");
  const texts = S.textsOf(card);
  assert.ok(texts.some((t) => /files your firm's email/.test(t) && /Open an email/.test(t)), texts.join("\n"));
  assert.ok(texts.includes("Draft settlement"), texts.join("\n"));
  assert.ok(texts.includes("M-2024-017 · Acme v. Widget"), texts.join("\n"));
  assert.ok(JSON.stringify(card).includes("https://docket.example.com/view/filings/f-10?t=cap"));
  assert.equal(S.findButton(card, "Search").onClickAction.functionName, "onSearchFiled");
});

test("onHomepage with nothing filed yet says so", () => {
  const addon = S.loadAddon({ responses: [{ status: 200, body: { filings: [] } }] });
  const card = run(addon, "onHomepage", { commonEventObject: { hostApp: "GMAIL" } });
  assert.ok(S.textsOf(card).includes("You have not filed anything yet."));
});

test("onSearchFiled finds filed mail and keeps the recent filings below", () => {
  const recent = { filings: [listedFiling("Draft settlement", F.acme, "/view/filings/f-10?t=a")] };
  const found = { filings: [listedFiling("Lease renewal", F.widgetLease, "/view/filings/f-11?t=b")] };
  const addon = S.loadAddon({ responses: [{ status: 200, body: recent }, { status: 200, body: found }] });
  const response = run(addon, "onSearchFiled", S.actionEvent({ formInputs: { q: ["lease "] } }));
  assert.equal(addon.urlFetch.requests[1].url, "https://docket.example.com/v1/filings?limit=20&q=lease");
  const card = response.navigation.steps[0].updateCard;
  const texts = S.textsOf(card);
  assert.ok(texts.includes("Lease renewal") && texts.includes("Draft settlement"), texts.join("\n"));
  assert.equal(S.findInput(card, "q").value, "lease");
  const none = S.loadAddon({ responses: [{ status: 200, body: recent }, { status: 200, body: { filings: [] } }] });
  const empty = run(none, "onSearchFiled", S.actionEvent({ formInputs: { q: ["zzz"] } }));
  assert.ok(S.textsOf(empty.navigation.steps[0].updateCard).includes("Nothing filed matches “zzz”."));
});

test("onRefresh replaces the card with the message's context again", () => {
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: F.contextAlreadyFiled() }] });
  const response = run(addon, "onRefresh", S.actionEvent({ parameters: { messageId: EVENT_MESSAGE_ID }, gmail: gmailEvent().gmail }));
  assert.deepEqual(response.navigation.steps[0], { popToRoot: true });
  assert.ok(S.textsOf(response.navigation.steps[1].updateCard).includes("Already filed"));
});

test("the manifest declares the triggers, scopes and an https fetch allow-list", () => {
  const manifest = require("../appsscript.json");
  assert.equal(manifest.runtimeVersion, "V8");
  assert.deepEqual(manifest.oauthScopes.slice().sort(), [
    "https://www.googleapis.com/auth/gmail.addons.current.message.readonly",
    "https://www.googleapis.com/auth/gmail.addons.execute",
    "https://www.googleapis.com/auth/script.external_request",
    "https://www.googleapis.com/auth/userinfo.email",
    "openid",
  ]);
  assert.deepEqual(manifest.dependencies.enabledAdvancedServices, [{ userSymbol: "Gmail", serviceId: "gmail", version: "v1" }]);
  assert.equal(manifest.addOns.common.homepageTrigger.runFunction, "onHomepage");
  assert.deepEqual(manifest.addOns.gmail.contextualTriggers, [{ unconditional: {}, onTriggerFunction: "onGmailMessage" }]);
  for (const prefix of manifest.urlFetchWhitelist) assert.match(prefix, /^https:\/\/[^/]+\/.*$/);
  const addon = S.loadAddon();
  for (const fn of ["onHomepage", "onGmailMessage", "onFile", "onSearch", "onRefresh"]) assert.equal(typeof addon.ctx[fn], "function", fn);
});

test("already filed: who filed it (a rule by its name), the note, and a View link to docket", () => {
  const ctx = F.contextWithSuggestions();
  ctx.already_filed = [
    {
      filing_id: "f-1",
      target: F.acme,
      filed_by: "alice@demo.test",
      filed_by_name: "Alice Adams",
      note: "Counter-offer, see para 4",
      filed_at: "2024-05-01T10:00:00.000Z",
      view_path: "/view/filings/f-1?t=cap",
    },
    {
      filing_id: "f-2",
      target: F.c88,
      filed_by: "system@docket.invalid",
      filed_by_name: "firm rule “Court mail”",
      rule: "Court mail",
      note: null,
      filed_at: "2024-05-01T10:00:00.000Z",
      view_path: "/view/filings/f-2?t=cap2",
    },
  ];
  ctx.rule_filings = [{ target: F.widgetLease, rule: "Leases" }];
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: ctx }] });
  const card = run(addon, "onGmailMessage", gmailEvent());
  const texts = S.textsOf(card);
  assert.ok(texts.includes("by Alice Adams · 2024-05-01 10:00 UTC · “Counter-offer, see para 4”"), texts.join("\n"));
  assert.ok(texts.includes("by firm rule “Court mail” · 2024-05-01 10:00 UTC"), texts.join("\n"));
  assert.ok(!texts.some((t) => t.includes("system@docket.invalid")));
  const views = JSON.stringify(card).match(/https:\/\/docket\.example\.com\/view\/filings\/f-[12]\?t=cap2?/g);
  assert.deepEqual(views, ["https://docket.example.com/view/filings/f-1?t=cap", "https://docket.example.com/view/filings/f-2?t=cap2"]);
  // The rule's own target is said, never offered as a check box.
  assert.ok(texts.includes("Also filed by firm rule “Leases”"), texts.join("\n"));
  assert.ok(!S.findInput(card, "targets").items.some((i) => i.value === "contract:K-2025-003"));
  // Searching from here marks the records the message is already in, unticked.
  const search = S.findButton(card, "Search");
  assert.deepEqual(JSON.parse(search.onClickAction.parameters.filed).sort(), ["case:C-88", "matter:M-2024-017"]);
});

test("search results mark a record the message is already in, and do not tick it", () => {
  const records = { records: [{ ...F.acme, client: "Acme", status: "open" }] };
  const addon = S.loadAddon({ messages: MESSAGES, responses: [{ status: 200, body: records }] });
  const response = run(
    addon,
    "onSearch",
    S.actionEvent({
      formInputs: { q: ["acme"] },
      parameters: { messageId: EVENT_MESSAGE_ID, attachments: "[]", filed: JSON.stringify(["matter:M-2024-017"]) },
      gmail: gmailEvent().gmail,
    })
  );
  const box = S.findInput(response.navigation.steps[0].pushCard, "targets");
  assert.deepEqual(
    box.items.map((i) => [i.text, i.selected]),
    [["M-2024-017 · Acme v. Widget (Acme) (already filed)", false]]
  );
});
