/**
 * Triggers and card actions of the docket Gmail add-on. Each one answers with a card: a
 * failure anywhere (configuration, Gmail, the network, docket) becomes a card that says what
 * went wrong, never an exception that leaves the sidebar blank.
 */

var DOCKET_URL_PROPERTY = "DOCKET_URL";

/** An error whose message is meant for the person in front of Gmail. */
function userFacingError_(text) {
  var err = new Error(text);
  err.userFacing = true;
  return err;
}

function describeError_(err) {
  if (err && err.userFacing) return err.message;
  console.error("docket add-on: " + (err && err.stack ? err.stack : err));
  return "Something went wrong in the docket add-on: " + (err && err.message ? err.message : String(err));
}

function docketUrl_() {
  var url = PropertiesService.getScriptProperties().getProperty(DOCKET_URL_PROPERTY);
  if (!url || !String(url).trim()) {
    throw userFacingError_(
      "The add-on is not connected to docket yet: the script property " +
        DOCKET_URL_PROPERTY +
        " is not set. Ask your docket administrator to set it to the firm's docket address (for example https://docket.example.com)."
    );
  }
  return String(url).trim();
}

function identityToken_() {
  var token = ScriptApp.getIdentityToken();
  if (!token) {
    throw userFacingError_(
      "Google gave the add-on no sign-in token for you, so docket cannot tell who you are. The add-on needs the openid scope; reinstall it and accept its permissions."
    );
  }
  return token;
}

/** Sends one request built by Logic.js and returns docket's JSON, or throws a user-facing error. */
function callDocket_(request) {
  if (payloadTooLarge(request)) {
    throw userFacingError_("This message is too large to send to docket from Gmail (Apps Script sends at most 50 MB).");
  }
  var response;
  try {
    response = UrlFetchApp.fetch(request.url, request.options);
  } catch (err) {
    console.error("docket add-on: fetch " + request.url.split("?")[0] + " failed: " + err);
    throw userFacingError_(
      "Could not reach docket (" + (err && err.message ? err.message : String(err)) + "). Check your connection and try again."
    );
  }
  var result = parseResponse(response.getResponseCode(), response.getContentText());
  if (!result.ok) throw userFacingError_(result.error);
  return result.data;
}

function commonEvent_(e) {
  return (e && e.commonEventObject) || {};
}

function actionParameters_(e) {
  return commonEvent_(e).parameters || (e && e.parameters) || {};
}

function formInputs_(e) {
  return commonEvent_(e).formInputs || (e && e.formInputs) || {};
}

/** The Gmail ids of the open message, from the event or, in card actions, from the action's parameters. */
function messageIds_(e) {
  var gmail = (e && e.gmail) || {};
  var params = actionParameters_(e);
  return { messageId: gmail.messageId || params.messageId, threadId: gmail.threadId || params.threadId };
}

/** Reads the open message and returns its raw RFC 822 bytes, base64url, with its Gmail ids. */
function readOpenMessage_(e) {
  var gmail = (e && e.gmail) || {};
  var ids = messageIds_(e);
  if (!ids.messageId) throw userFacingError_("Open an email to file it.");
  var message;
  var raw;
  try {
    // Lets this execution read the open message with the current-message scope only.
    if (gmail.accessToken) GmailApp.setCurrentMessageAccessToken(gmail.accessToken);
    message = GmailApp.getMessageById(ids.messageId);
    raw = message.getRawContent();
  } catch (err) {
    console.error("docket add-on: reading message failed: " + err);
    throw userFacingError_("Could not read this email from Gmail (" + (err && err.message ? err.message : err) + "). Reopen it and try again.");
  }
  // getRawContent() returns the message as a string; base64EncodeWebSafe(string) would encode it
  // with the platform charset, so turn it into bytes explicitly (Blob strings are UTF-8).
  var rawBase64url = Utilities.base64EncodeWebSafe(Utilities.newBlob(raw).getBytes());
  var threadId = ids.threadId;
  if (!threadId && message.getThread) threadId = message.getThread().getId();
  return {
    raw: rawBase64url,
    gmailMessageId: normaliseMessageId(message.getId ? message.getId() : ids.messageId) || normaliseMessageId(ids.messageId),
    gmailThreadId: normaliseMessageId(threadId),
  };
}

/** The context card model of the open message (the contextual trigger, "Back" and "Try again"). */
function contextCardModel_(e) {
  var base = docketUrl_();
  var token = identityToken_();
  var msg = readOpenMessage_(e);
  var context = callDocket_(buildContextRequest(base, token, msg.raw, msg.gmailThreadId, msg.gmailMessageId));
  return contextToCardModel(context, messageIds_(e), base);
}

// ---------------------------------------------------------------------------
// Triggers (appsscript.json)

/** The homepage model: the user's recent filings and, for a search, what matches. */
function homepageModel_(query) {
  var base = docketUrl_();
  var token = identityToken_();
  var recent = callDocket_(buildFilingsRequest(base, token, { mine: true, limit: 5 }));
  var results = query ? callDocket_(buildFilingsRequest(base, token, { query: query, limit: 20 })) : null;
  return homepageCardModel(recent, base, query, results);
}

function onHomepage(e) {
  try {
    return buildCard_(homepageModel_(""));
  } catch (err) {
    return buildCard_(errorCardModel(describeError_(err)));
  }
}

/** "Search filed mail" on the homepage. */
function onSearchFiled(e) {
  try {
    var query = firstInputValue_(formInputs_(e).q).trim();
    if (!query) return buildActionResponse_(null, "none", "Type a subject, sender or record to search for.");
    return buildActionResponse_(homepageModel_(query), "update");
  } catch (err) {
    var text = describeError_(err);
    return buildActionResponse_(errorCardModel(text), "update", text);
  }
}

function onGmailMessage(e) {
  try {
    return buildCard_(contextCardModel_(e));
  } catch (err) {
    return buildCard_(errorCardModel(describeError_(err), messageIds_(e)));
  }
}

// ---------------------------------------------------------------------------
// Card actions

/** Re-reads the open message's context and replaces the current card with it. */
function onRefresh(e) {
  try {
    return buildActionResponse_(contextCardModel_(e), "root");
  } catch (err) {
    var text = describeError_(err);
    return buildActionResponse_(errorCardModel(text, messageIds_(e)), "update", text);
  }
}

function onSearch(e) {
  try {
    var params = actionParameters_(e);
    var query = firstInputValue_(formInputs_(e).q).trim();
    if (!query) return buildActionResponse_(null, "none", "Type a reference, title or client to search for.");
    var records = callDocket_(buildSearchRequest(docketUrl_(), identityToken_(), query));
    var attachments = [];
    try {
      attachments = JSON.parse(params.attachments || "[]");
    } catch (ignored) {
      attachments = [];
    }
    var filed = [];
    try {
      filed = JSON.parse(params.filed || "[]");
    } catch (ignored) {
      filed = [];
    }
    var ids = messageIds_(e);
    var model = searchResultsToCardModel(records, {
      query: query,
      attachments: attachments,
      filed: filed,
      messageId: ids.messageId,
      threadId: ids.threadId,
      labelPrefix: params.labelPrefix,
    });
    return buildActionResponse_(model, params.view === "search" ? "update" : "push");
  } catch (err) {
    var text = describeError_(err);
    return buildActionResponse_(errorCardModel(text), "push", text);
  }
}

/**
 * Puts the firm's "Filed" labels on the message in the user's Gmail (`add`) or takes them off,
 * through the Gmail advanced service (users.labels, users.messages.modify: the gmail.modify
 * scope, narrower than the full-mailbox scope GmailApp's labels need). Returns the line the card
 * shows, or null when the firm does not label. A failure never undoes a filing.
 */
function labelMessage_(prefix, messageId, refs, add) {
  var wanted = labelNames(prefix, refs);
  if (!wanted.names.length || !messageId) return null;
  try {
    if (typeof Gmail === "undefined") throw new Error("the Gmail advanced service is not enabled in the add-on's manifest");
    // Gmail compares label names without case: so does this (and a map without a prototype,
    // so that no name is taken for one of Object's own properties).
    var listLabels = function () {
      var known = Object.create(null);
      ((Gmail.Users.Labels.list("me") || {}).labels || []).forEach(function (l) {
        known[String(l.name).toLowerCase()] = l.id;
      });
      return known;
    };
    var known = listLabels();
    if (add) {
      wanted.chain.forEach(function (name) {
        var key = name.toLowerCase();
        if (known[key]) return;
        try {
          known[key] = Gmail.Users.Labels.create({ name: name, labelListVisibility: "labelShow", messageListVisibility: "show" }, "me").id;
        } catch (err) {
          // Made meanwhile (another filing): use it; anything else stands.
          known = listLabels();
          if (!known[key]) throw err;
        }
      });
    }
    var ids = [];
    wanted.names.forEach(function (n) {
      var id = known[n.toLowerCase()];
      if (id && ids.indexOf(id) < 0) ids.push(id);
    });
    if (ids.length) Gmail.Users.Messages.modify(add ? { addLabelIds: ids } : { removeLabelIds: ids }, "me", messageId);
    return add ? "Labelled " + wanted.names.join(", ") + " in Gmail" : "Label " + wanted.names.join(", ") + " taken off in Gmail";
  } catch (err) {
    console.error("docket add-on: labelling failed: " + err);
    var text = err && err.message ? err.message : String(err);
    if (/scope|permission/i.test(text)) return "Not labelled in Gmail: the add-on may not change your labels (it needs the gmail.modify scope; ask your docket administrator).";
    return "Not labelled in Gmail: " + text;
  }
}

/** "Undo" on the filed card: takes back each filing just made (DELETE /v1/filings/{id}). */
function onUndo(e) {
  try {
    var params = actionParameters_(e);
    var ids = String(params.filings || "")
      .split(",")
      .filter(Boolean)
      .slice(0, 20);
    var base = docketUrl_();
    var token = identityToken_();
    var undone = [];
    var refused = [];
    var refs = [];
    ids.forEach(function (id) {
      try {
        var r = callDocket_(buildUndoRequest(base, token, id));
        undone.push(r);
        [r.target].concat(r.also_removed || []).forEach(function (t) {
          refs.push(String(t || "").split(":").slice(1).join(":"));
        });
      } catch (err) {
        refused.push(describeError_(err));
      }
    });
    var msgIds = messageIds_(e);
    var labelLine = undone.length ? labelMessage_(params.labelPrefix, normaliseMessageId(msgIds.messageId), refs, false) : null;
    var model = undoResultToCardModel(undone, refused, msgIds, labelLine);
    return buildActionResponse_(model, "root", model.notification);
  } catch (err) {
    var text = describeError_(err);
    return buildActionResponse_(errorCardModel(text), "push", text);
  }
}

/** The first string of one formInputs entry (text inputs carry a single value). */
function firstInputValue_(input) {
  if (Array.isArray(input)) return String(input[0] || "");
  var values = (input && input.stringInputs && input.stringInputs.value) || [];
  return String(values[0] || "");
}

function onFile(e) {
  try {
    var params = actionParameters_(e);
    var selection = formInputsToSelection(formInputs_(e), params.attachmentCount);
    if (!selection.targets.length) return buildActionResponse_(null, "none", "Tick at least one record to file to.");
    var base = docketUrl_();
    var token = identityToken_();
    var msg = readOpenMessage_(e);
    var result = callDocket_(
      buildFilingRequest(base, token, {
        raw: msg.raw,
        gmailMessageId: msg.gmailMessageId,
        gmailThreadId: msg.gmailThreadId,
        targets: selection.targets,
        attachments: selection.attachments,
        note: selection.note,
      })
    );
    var ids = messageIds_(e);
    ids.labelPrefix = params.labelPrefix;
    var labelLine = labelMessage_(params.labelPrefix, msg.gmailMessageId, filedReferences(result), true);
    return buildActionResponse_(filingResultToCardModel(result, ids, labelLine), "root");
  } catch (err) {
    // Pushed over the form, so "back" returns to the ticked boxes and the typed note.
    var text = describeError_(err);
    return buildActionResponse_(errorCardModel(text), "push", text);
  }
}
