// docket answers shaped as the JSON API contract describes them.
"use strict";

const acme = { kind: "matter", id: "M-2024-017", title: "Acme v. Widget" };
const widgetLease = { kind: "contract", id: "K-2025-003", title: "Widget lease" };
const c88 = { kind: "case", id: "C-88", title: "Regina v. Smith" };

const message = {
  subject: "Counter-offer <draft>",
  from: [{ name: "Gina Counsel", address: "gc@acme.com" }],
  message_id: "<abc@acme.com>",
};

function contextWithSuggestions() {
  return {
    message,
    already_filed: [],
    suggestions: [
      {
        target: acme,
        reasons: ["same thread as a message filed to M-2024-017", "from a contact of M-2024-017", "you filed 2 of your latest 9 filings here"],
        source: "thread",
        score: 16.5,
        confidence: 0.998,
        likelihood: "likely",
      },
      { target: widgetLease, reasons: ["subject mentions K-2025-003"], source: "subject", score: 11, confidence: 0.31, likelihood: "unsure" },
    ],
    attachments: [
      { index: 0, name: "offer.pdf", content_type: "application/pdf", size: 52300 },
      { index: 1, name: "logo.png", content_type: "image/png", size: 900 },
      { index: 2, name: "terms.docx", content_type: "application/vnd.openxmlformats-officedocument.wordprocessingml.document", size: 2400000 },
    ],
  };
}

function contextAlreadyFiled() {
  return {
    message,
    already_filed: [{ filing_id: "f-1", target: acme, filed_by: "alice@demo.test", filed_at: "2024-05-01T10:00:00.000Z" }],
    suggestions: [
      { target: acme, reasons: ["already filed here"], source: "history" },
      { target: c88, reasons: ["rule: emails from the court"], source: "rule" },
    ],
    attachments: [],
  };
}

function contextNothing() {
  return { message: { subject: "", from: [], message_id: null }, already_filed: [], suggestions: [], attachments: [] };
}

function filingAnswer(created, targets = [acme]) {
  return {
    filings: targets.map((t, i) => ({
      id: "f-" + (i + 10),
      created,
      target: t,
      filed_by: "bob@demo.test",
      filed_at: "2024-05-02T09:30:12.345Z",
      attachments: [{ index: 0, name: "offer.pdf", content_type: "application/pdf", size: 52300, sha256: "00" }],
      message: { subject: message.subject, from: message.from, message_id: message.message_id },
    })),
  };
}

const problem = (status, type, title, detail) =>
  JSON.stringify({ type: "urn:docket:problem:" + type, title, status, detail });

// A message with non-ASCII text, so byte handling shows.
const RAW_MESSAGE =
  "From: Gina Counsel <gc@acme.com>\r\nTo: bob@demo.test\r\nSubject: Counter-offer\r\nMessage-ID: <abc@acme.com>\r\n" +
  "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nPrix: 12 000 € — café\r\n";

module.exports = { acme, widgetLease, c88, message, contextWithSuggestions, contextAlreadyFiled, contextNothing, filingAnswer, problem, RAW_MESSAGE };
