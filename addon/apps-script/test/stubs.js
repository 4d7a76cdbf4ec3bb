// Minimal fakes of the Apps Script services the add-on uses, and a loader that runs the real
// Logic.js, Cards.js and Code.js unchanged in a vm context with those fakes as globals.
//
// The CardService fake only offers the builder methods the real CardService has (a misspelt or
// invented method fails here as it would in Apps Script) and records every call into plain
// objects, so tests read the built card as data.

"use strict";

const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");

const ADDON_DIR = path.join(__dirname, "..");
const ADDON_FILES = ["Logic.js", "Cards.js", "Code.js"];

// ---------------------------------------------------------------------------
// CardService

const BUILT = Symbol("built");

/** Turns recorded builder values (possibly nested builders) into plain data. */
function snapshot(value) {
  if (value && typeof value === "object") {
    if (value[BUILT]) return snapshot(value[BUILT]());
    if (Array.isArray(value)) return value.map(snapshot);
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = snapshot(v);
    return out;
  }
  return value;
}

function lowerFirst(s) {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

/**
 * A builder of `kind`. setters: "setTitle" records {title}; adders: {addWidget: "widgets"}
 * appends; custom: extra methods (receive the record and the args).
 */
function makeBuilder(kind, { setters = [], adders = {}, custom = {}, validate } = {}) {
  const record = { kind };
  const builder = {};
  for (const m of setters) {
    builder[m] = function (value) {
      if (arguments.length !== 1) throw new TypeError(`${kind}.${m} takes one argument`);
      record[lowerFirst(m.slice(3))] = value;
      return builder;
    };
  }
  for (const [m, field] of Object.entries(adders)) {
    builder[m] = function (value) {
      if (value === undefined) throw new TypeError(`${kind}.${m}: missing argument`);
      (record[field] = record[field] || []).push(value);
      return builder;
    };
  }
  for (const [m, fn] of Object.entries(custom)) {
    builder[m] = function (...args) {
      fn(record, ...args);
      return builder;
    };
  }
  const toPlain = () => {
    if (validate) validate(record);
    return snapshot(Object.assign({}, record));
  };
  Object.defineProperty(builder, BUILT, { value: toPlain });
  builder.build = toPlain;
  return builder;
}

function requireField(kind, field) {
  return (record) => {
    if (record[field] === undefined || record[field] === "") throw new Error(`${kind} needs ${field}`);
  };
}

function createCardService() {
  const enumOf = (...names) => Object.freeze(Object.fromEntries(names.map((n) => [n, n])));
  const cardService = {
    SelectionInputType: enumOf("CHECK_BOX", "RADIO_BUTTON", "SWITCH", "DROPDOWN", "MULTI_SELECT"),
    TextButtonStyle: enumOf("TEXT", "OUTLINED", "FILLED", "FILLED_TONAL", "BORDERLESS"),
    LoadIndicator: enumOf("SPINNER", "NONE"),
    newCardBuilder: () =>
      makeBuilder("Card", {
        setters: ["setHeader", "setName", "setFixedFooter", "setDisplayStyle", "setPeekCardHeader"],
        adders: { addSection: "sections", addCardAction: "cardActions" },
        validate: (r) => {
          if (!r.sections || !r.sections.length) throw new Error("a card needs at least one section");
        },
      }),
    newCardHeader: () =>
      makeBuilder("CardHeader", {
        setters: ["setTitle", "setSubtitle", "setImageUrl", "setImageStyle", "setImageAltText"],
        validate: requireField("CardHeader", "title"),
      }),
    newCardSection: () =>
      makeBuilder("CardSection", {
        setters: ["setHeader", "setCollapsible", "setNumUncollapsibleWidgets"],
        adders: { addWidget: "widgets" },
      }),
    newDecoratedText: () =>
      makeBuilder("DecoratedText", {
        setters: ["setText", "setTopLabel", "setBottomLabel", "setWrapText", "setStartIcon", "setEndIcon", "setButton", "setSwitchControl", "setOnClickAction"],
        validate: requireField("DecoratedText", "text"),
      }),
    newTextParagraph: () => makeBuilder("TextParagraph", { setters: ["setText"], validate: requireField("TextParagraph", "text") }),
    newSelectionInput: () =>
      makeBuilder("SelectionInput", {
        setters: ["setType", "setTitle", "setFieldName", "setOnChangeAction"],
        custom: {
          addItem: (record, text, value, selected) => {
            if (typeof selected !== "boolean") throw new TypeError("SelectionInput.addItem: selected must be a boolean");
            (record.items = record.items || []).push({ text, value, selected });
          },
        },
        validate: requireField("SelectionInput", "fieldName"),
      }),
    newTextInput: () =>
      makeBuilder("TextInput", {
        setters: ["setFieldName", "setTitle", "setHint", "setValue", "setMultiline", "setOnChangeAction"],
        validate: requireField("TextInput", "fieldName"),
      }),
    newTextButton: () =>
      makeBuilder("TextButton", {
        setters: ["setText", "setOnClickAction", "setOpenLink", "setTextButtonStyle", "setDisabled", "setBackgroundColor"],
        validate: requireField("TextButton", "text"),
      }),
    newButtonSet: () => makeBuilder("ButtonSet", { adders: { addButton: "buttons" } }),
    newOpenLink: () => makeBuilder("OpenLink", { setters: ["setUrl", "setOpenAs", "setOnClose"], validate: requireField("OpenLink", "url") }),
    newAction: () =>
      makeBuilder("Action", {
        setters: ["setFunctionName", "setLoadIndicator", "setPersistValues"],
        custom: {
          setParameters: (record, params) => {
            for (const [k, v] of Object.entries(params)) {
              if (typeof v !== "string") throw new TypeError(`Action parameter ${k} must be a string, got ${typeof v}`);
            }
            record.parameters = Object.assign({}, params);
          },
        },
        validate: requireField("Action", "functionName"),
      }),
    newNotification: () => makeBuilder("Notification", { setters: ["setText"], validate: requireField("Notification", "text") }),
    newNavigation: () =>
      makeBuilder("Navigation", {
        custom: {
          pushCard: (r, card) => (r.steps = r.steps || []).push({ pushCard: card }),
          updateCard: (r, card) => (r.steps = r.steps || []).push({ updateCard: card }),
          popCard: (r) => (r.steps = r.steps || []).push({ popCard: true }),
          popToRoot: (r) => (r.steps = r.steps || []).push({ popToRoot: true }),
          popToNamedCard: (r, name) => (r.steps = r.steps || []).push({ popToNamedCard: name }),
        },
      }),
    newActionResponseBuilder: () =>
      makeBuilder("ActionResponse", { setters: ["setNavigation", "setNotification", "setOpenLink", "setStateChanged"] }),
  };
  return cardService;
}

// ---------------------------------------------------------------------------
// UrlFetchApp, GmailApp, ScriptApp, Utilities, PropertiesService

/** responses: queue of {status, body} | Error (thrown by fetch) | function(url, options). */
function createUrlFetchApp(responses = []) {
  const queue = responses.slice();
  const requests = [];
  return {
    requests,
    fetch(url, options) {
      requests.push({ url, options: JSON.parse(JSON.stringify(options || {})) });
      if (!queue.length) throw new Error(`unexpected fetch of ${url}`);
      let next = queue.shift();
      if (typeof next === "function") next = next(url, options);
      if (next instanceof Error) throw next;
      return {
        getResponseCode: () => next.status,
        getContentText: () => (typeof next.body === "string" ? next.body : JSON.stringify(next.body)),
        getHeaders: () => next.headers || {},
      };
    },
  };
}

/** messages: {eventMessageId: {raw, id (hex), threadId (hex)}}. */
function createGmailApp(messages = {}) {
  const accessTokens = [];
  let current = null;
  return {
    accessTokens,
    setCurrentMessageAccessToken(token) {
      accessTokens.push(token);
      current = token;
    },
    getMessageById(id) {
      if (!current) throw new Error("Access denied: the current message access token is not set");
      const m = messages[id];
      if (!m) throw new Error(`Invalid argument: ${id}`);
      return {
        getId: () => m.id,
        getRawContent: () => m.raw,
        getSubject: () => m.subject || "",
        getThread: () => ({ getId: () => m.threadId }),
      };
    },
  };
}

/**
 * The Gmail advanced service (`Gmail.Users.Labels`, `Gmail.Users.Messages.modify`). Like
 * Google, it refuses every call when the script was not granted gmail.modify (`granted`).
 */
function createGmailAdvanced({ granted = true, labels = [] } = {}) {
  const state = { labels: labels.map((l) => ({ ...l })), modified: [], calls: [] };
  const check = (what) => {
    state.calls.push(what);
    if (!granted) throw new Error("GoogleJsonResponseException: API call to gmail.users.labels.list failed with error: Request had insufficient authentication scopes.");
  };
  state.Users = {
    Labels: {
      list(user) {
        check(`labels.list ${user}`);
        return { labels: state.labels.map((l) => ({ ...l, type: "user" })) };
      },
      create(resource, user) {
        check(`labels.create ${user} ${resource.name}`);
        if (state.labels.some((l) => l.name === resource.name)) throw new Error("Label name exists or conflicts");
        const label = { id: `Label_${state.labels.length + 1}`, name: resource.name };
        state.labels.push(label);
        return label;
      },
    },
    Messages: {
      modify(resource, user, id) {
        check(`messages.modify ${user} ${id}`);
        state.modified.push({ id, ...resource });
        return { id };
      },
    },
  };
  return state;
}

function createScriptApp(identityToken = "id-token-for-bob") {
  return { getIdentityToken: () => identityToken, getOAuthToken: () => "oauth-token" };
}

function toSignedBytes(buffer) {
  return Array.from(buffer, (b) => (b > 127 ? b - 256 : b)); // Java bytes, as Apps Script returns them
}

function createUtilities() {
  return {
    Charset: Object.freeze({ UTF_8: "UTF_8", US_ASCII: "US_ASCII" }),
    newBlob(data) {
      const buffer = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data.map((b) => b & 255));
      return { getBytes: () => toSignedBytes(buffer), getDataAsString: () => buffer.toString("utf8") };
    },
    base64EncodeWebSafe(data) {
      const buffer = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data.map((b) => b & 255));
      return buffer.toString("base64").replace(/\+/g, "-").replace(/\//g, "_"); // padded, like Apps Script
    },
  };
}

function createPropertiesService(props = {}) {
  const store = Object.assign({}, props);
  const properties = {
    getProperty: (k) => (Object.prototype.hasOwnProperty.call(store, k) ? store[k] : null),
    setProperty: (k, v) => {
      store[k] = String(v);
      return properties;
    },
  };
  return { getScriptProperties: () => properties };
}

function quietConsole() {
  const lines = [];
  const log = (...args) => lines.push(args.join(" "));
  return { lines, log, info: log, warn: log, error: log };
}

/**
 * Loads the add-on into a fresh vm context. options: {responses, messages, properties,
 * identityToken}. Returns {ctx, urlFetch, gmail, console}.
 */
function loadAddon(options = {}) {
  const urlFetch = createUrlFetchApp(options.responses);
  const gmail = createGmailApp(options.messages);
  const console = quietConsole();
  const globals = {
    CardService: createCardService(),
    UrlFetchApp: urlFetch,
    GmailApp: gmail,
    Gmail: createGmailAdvanced(options.gmailAdvanced),
    ScriptApp: createScriptApp(options.identityToken === undefined ? "id-token-for-bob" : options.identityToken),
    Utilities: createUtilities(),
    PropertiesService: createPropertiesService(
      options.properties === undefined ? { DOCKET_URL: "https://docket.example.com" } : options.properties
    ),
    console,
  };
  const ctx = vm.createContext(globals);
  for (const file of ADDON_FILES) {
    vm.runInContext(fs.readFileSync(path.join(ADDON_DIR, file), "utf8"), ctx, { filename: file });
  }
  return { ctx, urlFetch, gmail, console, gmailAdvanced: globals.Gmail };
}

// ---------------------------------------------------------------------------
// Reading built cards

/** Objects from the vm context have its own prototypes; compare plain copies. */
function plain(value) {
  return JSON.parse(JSON.stringify(value));
}

function widgetsOf(card) {
  return card.sections.flatMap((s) => s.widgets || []);
}

function textsOf(card) {
  const texts = [card.header && card.header.title, card.header && card.header.subtitle];
  for (const s of card.sections) {
    texts.push(s.header);
    for (const w of s.widgets || []) {
      texts.push(w.text, w.topLabel, w.bottomLabel, w.title);
      for (const item of w.items || []) texts.push(item.text);
      for (const b of w.buttons || []) texts.push(b.text);
    }
  }
  return texts.filter((t) => typeof t === "string");
}

function findButton(card, text) {
  for (const w of widgetsOf(card)) {
    for (const b of w.buttons || []) if (b.text === text) return b;
  }
  return null;
}

function findInput(card, fieldName) {
  return widgetsOf(card).find((w) => w.fieldName === fieldName) || null;
}

/** An action event as Gmail sends it for a click in a contextual card. */
function actionEvent({ formInputs = {}, parameters = {}, gmail } = {}) {
  const toFormInputs = {};
  for (const [name, values] of Object.entries(formInputs)) toFormInputs[name] = { stringInputs: { value: values } };
  return {
    commonEventObject: { hostApp: "GMAIL", platform: "WEB", formInputs: toFormInputs, parameters },
    formInputs: Object.fromEntries(Object.entries(formInputs)),
    parameters,
    gmail,
  };
}

module.exports = {
  createCardService,
  createUrlFetchApp,
  createGmailApp,
  createUtilities,
  createPropertiesService,
  loadAddon,
  plain,
  widgetsOf,
  textsOf,
  findButton,
  findInput,
  actionEvent,
};
