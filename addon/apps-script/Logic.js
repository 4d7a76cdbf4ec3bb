/**
 * Pure logic of the docket Gmail add-on: building docket requests, reading its answers and
 * turning them into plain card models. No Apps Script globals are used here, so node's test
 * runner loads this file directly (see the module.exports at the end); Cards.js renders the
 * models with CardService and Code.js wires the triggers.
 */

/** Apps Script's UrlFetch refuses payloads above 50 MB. */
var MAX_URLFETCH_PAYLOAD_CHARS = 50 * 1000 * 1000;
/** Longest "Already filed" list drawn on a card (a section holds at most 100 widgets). */
var MAX_LISTED_FILINGS = 20;
var MAX_SEARCH_RESULTS = 20;
var TARGET_KINDS = ["matter", "case", "contract"];

// ---------------------------------------------------------------------------
// Requests

function joinUrl(baseUrl, path) {
  var base = String(baseUrl || "").trim();
  if (!base) throw new Error("docket URL is not set");
  return base.replace(/\/+$/, "") + path;
}

function authorizedOptions_(idToken, method) {
  return {
    method: method,
    headers: { Authorization: "Bearer " + idToken },
    // docket answers errors as problem+json; read them instead of letting UrlFetch throw.
    muteHttpExceptions: true,
  };
}

function jsonPost_(url, idToken, body) {
  var options = authorizedOptions_(idToken, "post");
  options.contentType = "application/json";
  options.payload = JSON.stringify(body);
  return { url: url, options: options };
}

/** Adds the Gmail ids to a request body, normalised to the Gmail API's hex form, when known. */
function addGmailIds_(body, gmailMessageId, gmailThreadId) {
  var messageId = normaliseMessageId(gmailMessageId);
  var threadId = normaliseMessageId(gmailThreadId);
  if (messageId) body.gmail_message_id = messageId;
  if (threadId) body.gmail_thread_id = threadId;
  return body;
}

/** POST {base}/v1/addon/context: what docket knows and suggests about the open message. */
function buildContextRequest(baseUrl, idToken, rawBase64url, threadId, messageId) {
  var body = addGmailIds_({ raw: rawBase64url }, messageId, threadId);
  return jsonPost_(joinUrl(baseUrl, "/v1/addon/context"), idToken, body);
}

/** POST {base}/v1/filings: files the message to the chosen records. */
function buildFilingRequest(baseUrl, idToken, filing) {
  var body = { raw: filing.raw };
  addGmailIds_(body, filing.gmailMessageId, filing.gmailThreadId);
  body.targets = (filing.targets || []).map(function (t) {
    return { kind: t.kind, id: t.id };
  });
  body.attachments = filing.attachments === undefined ? "all" : filing.attachments;
  if (filing.note !== undefined && filing.note !== null && String(filing.note).trim() !== "") {
    body.note = String(filing.note);
  }
  return jsonPost_(joinUrl(baseUrl, "/v1/filings"), idToken, body);
}

/**
 * The Gmail labels of a filing: `{prefix}/{reference}` for each reference (a `/` in it
 * written `-`), once each, parents first (`Filed` before `Filed/M-1`, so Gmail nests them).
 * Returns {names: labels to put on or take off, chain: every label that must exist}.
 */
function labelNames(prefix, refs) {
  var names = [];
  var chain = [];
  if (!prefix) return { names: names, chain: chain };
  (refs || []).forEach(function (ref) {
    // A "/" in a reference makes no label level of its own (as docket's card does).
    var name = prefix + "/" + String(ref).split("/").join("-");
    if (names.indexOf(name) < 0) names.push(name);
    var parts = name.split("/");
    for (var i = 1; i <= parts.length; i++) {
      var part = parts.slice(0, i).join("/");
      if (chain.indexOf(part) < 0) chain.push(part);
    }
  });
  return { names: names, chain: chain };
}

/** The references a filing answer files to: the user's targets and the rules'. */
function filedReferences(filingJson) {
  var refs = [];
  ((filingJson && filingJson.filings) || []).concat((filingJson && filingJson.auto_filed) || []).forEach(function (f) {
    var id = f.target && f.target.id;
    if (id && refs.indexOf(id) < 0) refs.push(id);
  });
  return refs;
}

/** DELETE {base}/v1/filings/{id}: undoes one of the user's own filings (within docket's grace period). */
function buildUndoRequest(baseUrl, idToken, filingId) {
  return {
    url: joinUrl(baseUrl, "/v1/filings/") + encodeURIComponent(String(filingId)),
    options: authorizedOptions_(idToken, "delete"),
  };
}

/** GET {base}/v1/records?q=…&limit=20: records the user may file to. */
function buildSearchRequest(baseUrl, idToken, query) {
  var url =
    joinUrl(baseUrl, "/v1/records") +
    "?q=" +
    encodeURIComponent(String(query || "").trim()) +
    "&limit=" +
    MAX_SEARCH_RESULTS;
  return { url: url, options: authorizedOptions_(idToken, "get") };
}

/** True when a request's payload is beyond what UrlFetch will send. */
function payloadTooLarge(request) {
  var payload = request && request.options && request.options.payload;
  return typeof payload === "string" && payload.length > MAX_URLFETCH_PAYLOAD_CHARS;
}

// ---------------------------------------------------------------------------
// Responses

function genericErrorFor_(status) {
  if (status === 400) return "docket could not read the request (HTTP 400). Please report this to your docket administrator.";
  if (status === 401)
    return "docket could not confirm your Google sign-in. Reload Gmail and try again; if this keeps happening, ask your docket administrator to check the add-on's sign-in setup.";
  if (status === 403) return "You are not allowed to do this in docket. Ask your docket administrator for access.";
  if (status === 404) return "docket could not find that record.";
  if (status === 409) return "That record is closed for filing.";
  if (status === 413) return "This message is too large for docket.";
  if (status === 415 || status === 422) return "docket refused the request (HTTP " + status + ").";
  if (status === 429) return "docket is busy. Try again in a minute.";
  if (status >= 500) return "docket ran into a problem (HTTP " + status + "). Try again in a minute.";
  return "docket answered with an unexpected status (HTTP " + status + ").";
}

function tryParseJson_(text) {
  if (text === undefined || text === null || String(text).trim() === "") return { ok: false };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false };
  }
}

/**
 * Reads one docket answer. 2xx with a JSON body → {ok: true, data}; anything else →
 * {ok: false, status, error}, where error is the problem+json "detail" when docket sent one and
 * a plain sentence for the status otherwise.
 */
function parseResponse(status, bodyText) {
  var parsed = tryParseJson_(bodyText);
  if (status >= 200 && status < 300) {
    if (parsed.ok) return { ok: true, status: status, data: parsed.value };
    return {
      ok: false,
      status: status,
      error: "docket sent an answer the add-on could not read (HTTP " + status + "). Check that DOCKET_URL points at docket.",
    };
  }
  var result = { ok: false, status: status, error: genericErrorFor_(status) };
  var problem = parsed.ok ? parsed.value : null;
  if (problem && typeof problem === "object") {
    if (typeof problem.detail === "string" && problem.detail.trim() !== "") result.error = problem.detail.trim();
    if (typeof problem.type === "string") result.problemType = problem.type;
  }
  return result;
}

// ---------------------------------------------------------------------------
// Small formatting helpers

function targetValue(target) {
  return target.kind + ":" + target.id;
}

function targetLabel(target) {
  var title = target && target.title ? String(target.title).trim() : "";
  return title ? target.id + " · " + title : String(target.id);
}

/** "2024-05-01T10:00:00.000Z" → "2024-05-01 10:00 UTC"; anything else is shown as given. */
function formatTimestamp(value) {
  var m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/.exec(String(value || ""));
  if (!m) return String(value || "");
  var zone = !m[3] || m[3] === "Z" ? "UTC" : m[3];
  return m[1] + " " + m[2] + " " + zone;
}

function formatSize(bytes) {
  var n = Number(bytes);
  if (!isFinite(n) || n < 0) return "";
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return Math.round(n / 1024) + " KB";
  return (n / (1024 * 1024)).toFixed(1) + " MB";
}

function attachmentLabel(att) {
  var name = att.name ? String(att.name) : "attachment " + (Number(att.index) + 1);
  var size = formatSize(att.size);
  return size ? name + " (" + size + ")" : name;
}

function plural_(n, one, many) {
  return n + " " + (n === 1 ? one : many);
}

function describeSender_(message) {
  var from = (message && message.from) || [];
  if (!from.length) return "";
  var first = from[0] || {};
  return first.name ? first.name + " <" + first.address + ">" : first.address || "";
}

// ---------------------------------------------------------------------------
// Card models
//
// A card model is {name?, header: {title, subtitle?}, sections: [{header?, widgets: [...]}],
// notification?}; widgets are
//   {type: "decoratedText", topLabel?, text, bottomLabel?}
//   {type: "paragraph", text}
//   {type: "checkboxes", name, label, items: [{text, value, selected}]}
//   {type: "textInput", name, label, hint?, value?, multiline?}
//   {type: "buttons", buttons: [{text, functionName, parameters?, filled?}]}
// Action parameters are strings only, as CardService requires.

function stringParams_(params) {
  var out = {};
  Object.keys(params || {}).forEach(function (k) {
    if (params[k] !== undefined && params[k] !== null) out[k] = String(params[k]);
  });
  return out;
}

function attachmentsSection_(attachments) {
  if (!attachments.length) {
    return { header: "Attachments", widgets: [{ type: "paragraph", text: "No attachments." }] };
  }
  return {
    header: "Attachments",
    widgets: [
      {
        type: "checkboxes",
        name: "attachments",
        label: "Keep with the filing",
        items: attachments.map(function (att) {
          // Inline parts of the HTML body (signature logos) are offered unticked, as in Gmail.
          return { text: attachmentLabel(att), value: String(att.index), selected: !att.inline };
        }),
      },
    ],
  };
}

function noteSection_() {
  return {
    header: "Note",
    widgets: [{ type: "textInput", name: "note", label: "Note (optional)", hint: "At most 2,000 characters", multiline: true }],
  };
}

function searchSection_(header, query, params) {
  return {
    header: header,
    widgets: [
      { type: "textInput", name: "q", label: "Matter, case or contract", hint: "Reference, title or client", value: query || "" },
      { type: "buttons", buttons: [{ text: "Search", functionName: "onSearch", parameters: stringParams_(params) }] },
    ],
  };
}

/** The attachment list handed from card to card (search results need it for their form). */
function compactAttachments_(attachments) {
  return JSON.stringify(
    attachments.map(function (a) {
      return { index: a.index, name: a.name, size: a.size, inline: !!a.inline };
    })
  );
}

/** At most n characters of text, with "…" when cut. */
function truncate_(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

/**
 * Where the firm's auto-file rules also file the message: said apart, never a check box (it
 * happens whatever the lawyer ticks).
 */
function ruleFilingWidgets_(ruleFilings) {
  return (ruleFilings || []).map(function (r) {
    return {
      type: "decoratedText",
      topLabel: "Also filed by firm rule “" + r.rule + "”",
      text: targetLabel(r.target || {}),
      bottomLabel: "whenever this message is filed",
    };
  });
}

/**
 * The sidebar card for an open message. ids = {messageId, threadId} (the Gmail ids, passed on
 * to the actions so they can re-read the message).
 */
function contextToCardModel(context, ids, baseUrl) {
  context = context || {};
  ids = ids || {};
  var message = context.message || {};
  var alreadyFiled = context.already_filed || [];
  // A record a firm rule files the message to anyway is never a choice (said apart below).
  var byRules = {};
  (context.rule_filings || []).forEach(function (r) {
    if (r.target) byRules[targetValue(r.target)] = true;
  });
  var suggestions = (context.suggestions || []).filter(function (s) {
    return s.target && !byRules[targetValue(s.target)];
  });
  var attachments = context.attachments || [];
  var filedValues = {};
  alreadyFiled.forEach(function (f) {
    if (f.target) filedValues[targetValue(f.target)] = true;
  });

  // The firm's "Filed" label prefix travels with the File and search buttons to onFile.
  var baseParams = { messageId: ids.messageId, threadId: ids.threadId, labelPrefix: context.gmail_label_prefix || undefined };
  var sections = [];

  if (alreadyFiled.length) {
    var filedWidgets = alreadyFiled.slice(0, MAX_LISTED_FILINGS).map(function (f) {
      var target = f.target || {};
      // Who filed it (a rule by its name), when, and the note.
      var bottom = "by " + (f.filed_by_name || f.filed_by || "someone") + " · " + formatTimestamp(f.filed_at);
      if (f.note && String(f.note).trim()) bottom += " · “" + truncate_(String(f.note).trim(), 80) + "”";
      var widget = {
        type: "decoratedText",
        topLabel: target.kind || "",
        text: targetLabel(target),
        bottomLabel: bottom,
      };
      if (f.view_path && baseUrl) widget.link = { text: "View", url: String(baseUrl).replace(/\/+$/, "") + f.view_path };
      return widget;
    });
    if (alreadyFiled.length > MAX_LISTED_FILINGS) {
      filedWidgets.push({ type: "paragraph", text: "…and " + (alreadyFiled.length - MAX_LISTED_FILINGS) + " more." });
    }
    sections.push({ header: "Already filed", widgets: filedWidgets });
  }

  if (suggestions.length) {
    var firstSelectable = -1;
    suggestions.forEach(function (s, i) {
      if (firstSelectable < 0 && s.target && !filedValues[targetValue(s.target)]) firstSelectable = i;
    });
    var widgets = suggestions.map(function (s) {
      // The two strongest reasons, after the likelihood in a word ("likely", "possible").
      var reasons = (s.reasons || []).slice(0, 2).join("; ");
      if (s.likelihood && s.likelihood !== "unsure") reasons = s.likelihood + (reasons ? ": " + reasons : "");
      return {
        type: "decoratedText",
        topLabel: s.target.kind || "",
        text: targetLabel(s.target),
        bottomLabel: reasons || "suggested by docket",
      };
    });
    widgets.push({
      type: "checkboxes",
      name: "targets",
      label: "File to",
      items: suggestions.map(function (s, i) {
        var filed = filedValues[targetValue(s.target)];
        return {
          text: targetLabel(s.target) + (filed ? " (already filed)" : ""),
          value: targetValue(s.target),
          // Only the best suggestion is ticked: one click files where docket is most sure.
          selected: i === firstSelectable,
        };
      }),
    });
    sections.push({ header: "Suggestions", widgets: widgets.concat(ruleFilingWidgets_(context.rule_filings)) });
    sections.push(attachmentsSection_(attachments));
    sections.push(noteSection_());
    sections.push({
      widgets: [
        {
          type: "buttons",
          buttons: [
            {
              text: "File",
              functionName: "onFile",
              filled: true,
              parameters: stringParams_({ messageId: ids.messageId, threadId: ids.threadId, attachmentCount: attachments.length, labelPrefix: baseParams.labelPrefix }),
            },
          ],
        },
      ],
    });
    sections.push(searchSection_("Another record", "", Object.assign({ attachments: compactAttachments_(attachments), filed: JSON.stringify(Object.keys(filedValues)) }, baseParams)));
  } else {
    sections.push({
      header: "Suggestions",
      widgets: [{ type: "paragraph", text: "docket has no suggestion for this message. Search for the record to file it to." }].concat(
        ruleFilingWidgets_(context.rule_filings)
      ),
    });
    sections.push(searchSection_("Find a record", "", Object.assign({ attachments: compactAttachments_(attachments), filed: JSON.stringify(Object.keys(filedValues)) }, baseParams)));
  }

  return {
    name: "context",
    header: { title: message.subject || "(no subject)", subtitle: describeSender_(message) },
    sections: sections,
  };
}

/**
 * The card listing records found by a search, with the filing form. options = {query,
 * attachments: [{index, name, size}], messageId, threadId}.
 */
function searchResultsToCardModel(recordsJson, options) {
  options = options || {};
  var records = (recordsJson && recordsJson.records) || [];
  var attachments = options.attachments || [];
  // Records the message is already in (from the context card): marked, never ticked.
  var filed = {};
  (options.filed || []).forEach(function (v) {
    filed[v] = true;
  });
  var query = options.query || "";
  var ids = { messageId: options.messageId, threadId: options.threadId };
  var sections = [];
  if (!records.length) {
    sections.push({
      header: "Results",
      widgets: [{ type: "paragraph", text: "No record you may file to matches “" + query + "”." }],
    });
  } else {
    sections.push({
      header: "Results",
      widgets: [
        {
          type: "checkboxes",
          name: "targets",
          label: "File to",
          items: records.map(function (r) {
            var extra = [r.client, r.status && ["open", "active"].indexOf(r.status) < 0 ? r.status : ""].filter(Boolean).join(", ");
            var already = !!filed[targetValue(r)];
            return {
              text: targetLabel(r) + (extra ? " (" + extra + ")" : "") + (already ? " (already filed)" : ""),
              value: targetValue(r),
              selected: records.length === 1 && !already,
            };
          }),
        },
      ],
    });
    sections.push(attachmentsSection_(attachments));
    sections.push(noteSection_());
    sections.push({
      widgets: [
        {
          type: "buttons",
          buttons: [
            {
              text: "File",
              functionName: "onFile",
              filled: true,
              parameters: stringParams_({ messageId: ids.messageId, threadId: ids.threadId, attachmentCount: attachments.length, labelPrefix: options.labelPrefix }),
            },
          ],
        },
      ],
    });
  }
  sections.push(
    searchSection_("Search again", query, {
      messageId: ids.messageId,
      threadId: ids.threadId,
      attachments: compactAttachments_(attachments),
      filed: JSON.stringify(options.filed || []),
      view: "search",
      labelPrefix: options.labelPrefix,
    })
  );
  return {
    name: "search",
    header: { title: "Records matching “" + query + "”", subtitle: plural_(records.length, "record", "records") },
    sections: sections,
  };
}

/** The card shown after POST /v1/filings answered. ids = {messageId, threadId}. */
function filingResultToCardModel(filingJson, ids, labelLine) {
  ids = ids || {};
  var filings = (filingJson && filingJson.filings) || [];
  var created = filings.filter(function (f) {
    return f.created;
  });
  var widgets = filings.map(function (f) {
    var target = f.target || {};
    var kept = f.attachments ? plural_(f.attachments.length, "attachment", "attachments") : "";
    return {
      type: "decoratedText",
      topLabel: target.kind || "",
      text: (f.created ? "Filed to " : "Already filed to ") + targetLabel(target),
      bottomLabel: ["by " + (f.filed_by || "someone"), formatTimestamp(f.filed_at), kept].filter(Boolean).join(" · "),
    };
  });
  if (!widgets.length) widgets.push({ type: "paragraph", text: "docket answered without any filing." });
  if (labelLine) widgets.push({ type: "paragraph", text: labelLine });
  var buttons = [];
  if (created.length) {
    var undoParams = stringParams_(ids);
    undoParams.filings = created
      .map(function (f) {
        return String(f.id);
      })
      .join(",");
    buttons.push({ text: "Undo", functionName: "onUndo", parameters: undoParams });
  }
  buttons.push({ text: "Back to the message", functionName: "onRefresh", parameters: stringParams_(ids) });
  widgets.push({ type: "buttons", buttons: buttons });

  var notification;
  if (filings.length === 1) {
    notification = (filings[0].created ? "Filed to " : "Already filed to ") + (filings[0].target || {}).id;
  } else if (created.length === 0) {
    notification = "Already filed to " + plural_(filings.length, "record", "records");
  } else {
    notification = "Filed to " + plural_(filings.length, "record", "records");
  }

  var message = (filings[0] && filings[0].message) || {};
  return {
    name: "filed",
    header: {
      title: created.length ? "Filed" : "Already filed",
      subtitle: message.subject || "",
    },
    sections: [{ widgets: widgets }],
    notification: notification,
  };
}

/**
 * The card after "Undo": each answer of DELETE /v1/filings/{id} (`undone`) says which record
 * the filing left; `refused` holds docket's reasons for the others (e.g. the grace period is over).
 */
function undoResultToCardModel(undone, refused, ids, labelLine) {
  var widgets = (undone || []).map(function (r) {
    var ref = String(r.target || "").split(":").slice(1).join(":") || String(r.target || "");
    var also = r.also_removed && r.also_removed.length ? "with the rules' filings to " + r.also_removed.join(", ") : "";
    return { type: "decoratedText", topLabel: "Taken back from", text: ref + (r.title ? " · " + r.title : ""), bottomLabel: also };
  });
  (refused || []).forEach(function (text) {
    widgets.push({ type: "paragraph", text: text });
  });
  if (labelLine) widgets.push({ type: "paragraph", text: labelLine });
  widgets.push({
    type: "buttons",
    buttons: [{ text: "Back to the message", functionName: "onRefresh", parameters: stringParams_(ids || {}) }],
  });
  var done = (undone || []).length > 0;
  return {
    name: "undone",
    header: { title: done ? "Filing undone" : "Not undone", subtitle: "" },
    sections: [{ widgets: widgets }],
    notification: done
      ? "Filing undone: " +
        undone
          .map(function (r) {
            return String(r.target || "").split(":").slice(1).join(":");
          })
          .join(", ")
      : (refused && refused[0]) || "Nothing to undo.",
  };
}

/** GET /v1/filings: the caller's own filings (mine) or filings matching text (query). */
function buildFilingsRequest(baseUrl, idToken, options) {
  options = options || {};
  var params = ["limit=" + (options.limit || MAX_SEARCH_RESULTS)];
  if (options.mine) params.push("mine=true");
  if (options.query) params.push("q=" + encodeURIComponent(String(options.query).trim()));
  return { url: joinUrl(baseUrl, "/v1/filings") + "?" + params.join("&"), options: authorizedOptions_(idToken, "get") };
}

/** One filing of a list: record, subject, when, and a View link when docket sent one. */
function filingLine_(f, baseUrl) {
  var target = f.target || {};
  var message = f.message || {};
  var widget = {
    type: "decoratedText",
    topLabel: targetLabel(target),
    text: message.subject || "(no subject)",
    bottomLabel: formatTimestamp(f.filed_at),
  };
  if (f.view_path && baseUrl) widget.link = { text: "View", url: String(baseUrl).replace(/\/+$/, "") + f.view_path };
  return widget;
}

/**
 * The homepage: what docket is, a search of the filed mail, and the user's recent filings.
 * recentJson and resultsJson are GET /v1/filings answers (resultsJson only after a search).
 */
function homepageCardModel(recentJson, baseUrl, query, resultsJson) {
  var sections = [
    {
      widgets: [
        {
          type: "paragraph",
          text: "docket files your firm's email into its matters, cases and contracts. Open an email to see where it belongs and file it, with its attachments, in one click.",
        },
      ],
    },
    {
      header: "Find filed mail",
      widgets: [
        { type: "textInput", name: "q", label: "Search filed mail", hint: "Subject, sender or record", value: query || "" },
        { type: "buttons", buttons: [{ text: "Search", functionName: "onSearchFiled", parameters: {} }] },
      ],
    },
  ];
  if (resultsJson) {
    var found = resultsJson.filings || [];
    sections.push({
      header: "Results",
      widgets: found.length
        ? found.map(function (f) {
            return filingLine_(f, baseUrl);
          })
        : [{ type: "paragraph", text: "Nothing filed matches “" + query + "”." }],
    });
  }
  var recent = (recentJson && recentJson.filings) || [];
  sections.push({
    header: "Your recent filings",
    widgets: recent.length
      ? recent.map(function (f) {
          return filingLine_(f, baseUrl);
        })
      : [{ type: "paragraph", text: "You have not filed anything yet." }],
  });
  return { name: "home", header: { title: "docket" }, sections: sections };
}

/** A card that says what went wrong; ids (optional) add a "Try again" button. */
function errorCardModel(text, ids) {
  var widgets = [{ type: "paragraph", text: String(text || "Something went wrong.") }];
  if (ids && ids.messageId) {
    widgets.push({ type: "buttons", buttons: [{ text: "Try again", functionName: "onRefresh", parameters: stringParams_(ids) }] });
  }
  return {
    name: "error",
    header: { title: "docket could not do that" },
    sections: [{ widgets: widgets }],
  };
}

// ---------------------------------------------------------------------------
// Gmail ids and form inputs

/**
 * Gmail ids from add-on events look like "msg-f:1659728385805497086" (decimal); the Gmail API
 * and docket use the same number in lowercase hex. Already-hex ids pass through.
 */
function normaliseMessageId(id) {
  if (id === undefined || id === null) return null;
  var s = String(id).trim();
  if (!s) return null;
  var prefixed = /^(?:msg|thread)-[a-z]:/i.test(s);
  s = s.replace(/^(?:msg|thread)-[a-z]:/i, "");
  // A 64-bit id has at most 16 hex digits, so a longer run of digits can only be decimal.
  if (/^[0-9]+$/.test(s) && (prefixed || s.length > 16)) return BigInt(s).toString(16);
  if (/^[0-9a-f]+$/i.test(s)) return s.toLowerCase();
  return null;
}

function stringInputs_(formInputs, name) {
  var input = formInputs && formInputs[name];
  if (!input) return null;
  if (Array.isArray(input)) return input; // legacy e.formInputs shape: name → [values]
  if (input.stringInputs && Array.isArray(input.stringInputs.value)) return input.stringInputs.value;
  return null;
}

function parseTarget(value) {
  var s = String(value || "");
  var colon = s.indexOf(":");
  if (colon <= 0) return null;
  var kind = s.slice(0, colon);
  var id = s.slice(colon + 1);
  if (TARGET_KINDS.indexOf(kind) < 0 || !id) return null;
  return { kind: kind, id: id };
}

/**
 * Reads the filing form from e.commonEventObject.formInputs. A check-box group with nothing
 * ticked is absent from formInputs, so an absent "attachments" means keep none. When every one
 * of attachmentCount attachments is ticked the answer is "all".
 */
function formInputsToSelection(formInputs, attachmentCount) {
  var seen = {};
  var targets = [];
  (stringInputs_(formInputs, "targets") || []).forEach(function (v) {
    var t = parseTarget(v);
    if (t && !seen[v]) {
      seen[v] = true;
      targets.push(t);
    }
  });

  var indices = [];
  (stringInputs_(formInputs, "attachments") || []).forEach(function (v) {
    var n = Number(v);
    if (/^\d+$/.test(String(v)) && indices.indexOf(n) < 0) indices.push(n);
  });
  indices.sort(function (a, b) {
    return a - b;
  });
  var count = Number(attachmentCount);
  var attachments = indices;
  if (count > 0 && indices.length === count && indices[count - 1] === count - 1) attachments = "all";

  var noteValues = stringInputs_(formInputs, "note") || [];
  var note = noteValues.length ? String(noteValues[0]).trim() : "";
  var selection = { targets: targets, attachments: attachments };
  if (note) selection.note = note;
  return selection;
}

if (typeof module !== "undefined") {
  module.exports = {
    MAX_URLFETCH_PAYLOAD_CHARS: MAX_URLFETCH_PAYLOAD_CHARS,
    joinUrl: joinUrl,
    buildContextRequest: buildContextRequest,
    buildFilingRequest: buildFilingRequest,
    buildSearchRequest: buildSearchRequest,
    buildUndoRequest: buildUndoRequest,
    labelNames: labelNames,
    filedReferences: filedReferences,
    undoResultToCardModel: undoResultToCardModel,
    payloadTooLarge: payloadTooLarge,
    parseResponse: parseResponse,
    targetValue: targetValue,
    targetLabel: targetLabel,
    formatTimestamp: formatTimestamp,
    formatSize: formatSize,
    attachmentLabel: attachmentLabel,
    contextToCardModel: contextToCardModel,
    searchResultsToCardModel: searchResultsToCardModel,
    filingResultToCardModel: filingResultToCardModel,
    homepageCardModel: homepageCardModel,
    errorCardModel: errorCardModel,
    normaliseMessageId: normaliseMessageId,
    parseTarget: parseTarget,
    formInputsToSelection: formInputsToSelection,
    buildFilingsRequest: buildFilingsRequest,
  };
}
