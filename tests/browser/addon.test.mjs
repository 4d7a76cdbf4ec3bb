// The whole add-on flow in a real browser against a real `docket dev`: open the Acme sample in
// the simulator (/dev/addon), file it to the suggested matter, check through the API, undo it
// from the filed card and file it again, open it again ("Already filed"), file again (still
// one filing).
//
// Needs target/debug/docket (run `cargo build` first) and Chromium at /usr/bin/chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT, BIN, SIMULATOR, artifact, requireChromium, launch, startDocket, step, errors, lastEntry, topCard } from "./_lib.mjs";

const MATTER = "M-2024-017";


async function api(base, pathname, init = {}) {
  const r = await fetch(base + pathname, init);
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, json };
}

async function filingsFor(base, target) {
  const tok = await api(base, "/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ email: "alice@demo.test" }) });
  assert.equal(tok.status, 200, `POST /dev/token: ${JSON.stringify(tok.json)}`);
  const list = await api(base, `/v1/filings?target=${encodeURIComponent(target)}`, { headers: { Authorization: `Bearer ${tok.json.token}` } });
  assert.equal(list.status, 200, `GET /v1/filings: ${JSON.stringify(list.json)}`);
  return list.json.filings;
}

/** Fails with what the sidebar and the last exchange say when the page shows an error. */
async function assertNoErrors(page, what) {
  const errs = await errors(page);
  if (errs.length) {
    const last = await lastEntry(page);
    assert.fail(`${what}: the sidebar shows ${JSON.stringify(errs)}; last exchange: ${JSON.stringify(last && { url: last.url, status: last.status, response: last.response })}`);
  }
}

/** The visible sidebar text: the top card, the footer, notices and the toast. */
const sidebarText = (page) => page.evaluate(() => {
  const sb = document.querySelector("[data-testid=sidebar]");
  return `${sb.innerText}\n${sb.dataset.lastToast || ""}`;
});

/** Ticks the first suggestion for the matter (a check box, radio or dropdown option), or
 *  returns its own "File here"-style button when the card files from the suggestion itself. */
async function chooseSuggestion(card, page) {
  for (const role of ["checkbox", "radio"]) {
    const box = card.getByRole(role, { name: new RegExp(MATTER) }).first();
    if (await box.count()) {
      if (!(await box.isChecked())) await box.check();
      return null;
    }
  }
  const select = card.locator("select").filter({ has: page.locator("option", { hasText: MATTER }) }).first();
  if (await select.count()) {
    const value = await select.locator("option", { hasText: MATTER }).first().getAttribute("value");
    await select.selectOption(value);
    return null;
  }
  const own = card.locator("[data-testid=widget]").filter({ hasText: MATTER }).getByRole("button", { name: /^File/i }).first();
  if (await own.count()) return own;
  return null;
}

/** Picks the matter: a suggestion when the card offers one, else through the card's search
 *  (a record already filed is no longer suggested). Returns a button to click instead of File,
 *  if the choice is itself a button. */
async function chooseMatter(page) {
  const card = topCard(page);
  if (await hasChoice(card)) return chooseSuggestion(card, page);
  const search = card.getByRole("textbox", { name: /search|find/i }).first();
  assert.ok(await search.count(), `the card offers no way to pick ${MATTER}:\n${await card.innerText()}`);
  await search.fill(MATTER);
  await step(page, () => card.getByRole("button", { name: /^(Search|Find)/i }).first().click());
  await assertNoErrors(page, "searching for the matter");
  const after = topCard(page);
  assert.ok(await hasChoice(after), `searching for ${MATTER} found nothing to pick:\n${await after.innerText()}`);
  return chooseSuggestion(after, page);
}

async function hasChoice(card) {
  const n = (await card.getByRole("checkbox", { name: new RegExp(MATTER) }).count()) +
    (await card.getByRole("radio", { name: new RegExp(MATTER) }).count()) +
    (await card.locator("select option", { hasText: MATTER }).count()) +
    (await card.locator("[data-testid=widget]").filter({ hasText: MATTER }).getByRole("button", { name: /^File/i }).count());
  return n > 0;
}

/** The card's (or footer's) File button. */
function fileButton(page) {
  return page.getByTestId("sidebar").getByRole("button", { name: /^File( (this )?(email|message))?$/i }).first();
}

test("file the Acme sample through the add-on simulator, once", { timeout: 180_000 }, async (t) => {
  if (!requireChromium(t)) return;
  const docket = await startDocket();
  let browser, page, ok = false;
  try {
    browser = await launch();
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));

    // The page is compiled into docket (include_str!): a stale binary would test an old page.
    const served = await (await fetch(`${docket.base}/dev/addon`)).text();
    const onDisk = fs.readFileSync(SIMULATOR, "utf8");
    if (process.env.SIMULATOR_FROM_DISK === "1") {
      // Iterating on the page without rebuilding docket: serve the file from disk instead.
      await page.route(`${docket.base}/dev/addon`, (r) => r.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: onDisk }));
    } else {
      assert.ok(served === onDisk, `${path.relative(ROOT, BIN)} serves an older src/http/simulator.html: rebuild it (cargo build), or set SIMULATOR_FROM_DISK=1`);
    }
    await page.goto(`${docket.base}/dev/addon`);
    await page.waitForSelector("body[data-ready='1']", { timeout: 15_000 });
    await assertNoErrors(page, "loading the dev mailbox");

    // Pick the Acme sample: subject mentions the matter, sent by dana@acme.com.
    const options = await page.$$eval("[data-testid=message-select] option", (os) => os.map((o) => ({ value: o.value, text: o.textContent })));
    const sample = options.find((o) => o.text.includes(MATTER) && /dana@acme\.com/i.test(o.text));
    assert.ok(sample, `no dev mailbox message mentions ${MATTER} from dana@acme.com: ${JSON.stringify(options)}`);
    await page.getByTestId("message-select").selectOption(sample.value);

    // Open it: a card with the suggestion and why.
    await step(page, () => page.getByTestId("open-message").click());
    await assertNoErrors(page, "opening the message");
    let card = topCard(page);
    await card.waitFor();
    const suggestion = card.locator("[data-testid=option], [data-testid=decorated-text], [data-testid=paragraph]").filter({ hasText: MATTER }).first();
    assert.ok(await suggestion.count(), `no suggestion for ${MATTER}:\n${await card.innerText()}`);
    const suggestionText = (await suggestion.innerText()).replace(MATTER, "");
    assert.match(suggestionText, /contact|mention|subject|sender|thread|acme\.com/i, `the suggestion gives no reason: ${suggestionText}`);
    await page.screenshot({ path: artifact("addon-flow-message.png") });

    // Pick it, keep every attachment, File.
    const own = await chooseSuggestion(card, page);
    assert.ok(own || await hasChoice(card), `${MATTER} is not offered as a choice:\n${await card.innerText()}`);
    const attachments = card.getByRole("checkbox", { name: /\.pdf\b/i });
    assert.ok(await attachments.count() >= 1, `the card lists no PDF attachment:\n${await card.innerText()}`);
    for (const box of await attachments.all()) assert.equal(await box.isChecked(), true, "attachments are ticked by default");
    await step(page, () => (own || fileButton(page)).click());
    await assertNoErrors(page, "filing");
    const filedEvent = (await lastEntry(page)).request;
    assert.deepEqual(filedEvent.commonEventObject.parameters, { op: "file" });
    assert.ok(filedEvent.gmail && /^msg-f:\d+$/.test(filedEvent.gmail.messageId), JSON.stringify(filedEvent.gmail));
    const afterFile = await sidebarText(page);
    assert.match(afterFile, /Filed to/, afterFile);
    assert.ok(afterFile.includes(MATTER), afterFile);
    // The demo firm labels filed mail: the card says so, and the fake Gmail shows the label.
    assert.ok(afterFile.includes(`Labelled Filed/${MATTER} in Gmail`), afterFile);
    assert.equal(await page.getByTestId("mail-labels").textContent(), `Labels: Filed/${MATTER}`);
    await page.screenshot({ path: artifact("addon-flow-filed.png") });

    // The API agrees: exactly one filing, with the sample's attachment(s).
    let filings = await filingsFor(docket.base, `matter:${MATTER}`);
    assert.equal(filings.length, 1, JSON.stringify(filings, null, 2));
    let [filing] = filings;
    assert.equal(filing.target.id, MATTER);
    assert.ok(filing.attachments.length >= 1, "the filing kept the attachment");
    assert.equal(filing.attachments.length, filing.message.attachments.length, "every attachment was kept");
    assert.ok(filing.attachments.some((a) => /\.pdf$/i.test(a.name) || a.content_type === "application/pdf"), JSON.stringify(filing.attachments));
    assert.match(filing.message.subject, new RegExp(MATTER));

    // Undo from the filed card: the filing goes, and the message is no longer "Already filed".
    await step(page, () => topCard(page).getByRole("button", { name: "Undo", exact: true }).click());
    await assertNoErrors(page, "undoing the filing");
    const undone = await sidebarText(page);
    assert.match(undone, /Filing undone/, undone);
    assert.ok(undone.includes(MATTER), undone);
    assert.equal((await filingsFor(docket.base, `matter:${MATTER}`)).length, 0, "the undone filing is gone");
    assert.ok(undone.includes(`Label Filed/${MATTER} taken off in Gmail`), undone);
    assert.equal(await page.getByTestId("mail-labels").textContent(), "", "the label is off again");
    await step(page, () => page.getByTestId("open-message").click());
    await assertNoErrors(page, "reopening the message after undo");
    assert.doesNotMatch(await topCard(page).innerText(), /Already filed/i);
    await page.screenshot({ path: artifact("addon-flow-undone.png") });
    // File it again: a new filing.
    const own1 = await chooseMatter(page);
    await step(page, () => (own1 || fileButton(page)).click());
    await assertNoErrors(page, "filing after the undo");
    filings = await filingsFor(docket.base, `matter:${MATTER}`);
    assert.equal(filings.length, 1, JSON.stringify(filings, null, 2));
    assert.notEqual(filings[0].id, filing.id, "a new filing, not the undone one");
    assert.equal(await page.getByTestId("mail-labels").textContent(), `Labels: Filed/${MATTER}`);
    [filing] = filings;

    // Open it again: "Already filed", naming the matter.
    await step(page, () => page.getByTestId("open-message").click());
    await assertNoErrors(page, "reopening the message");
    card = topCard(page);
    const again = await card.innerText();
    assert.match(again, /Already filed/i, again);
    const filedSection = card.locator("[data-testid=section]").filter({ hasText: /Already filed/i }).first();
    assert.ok((await filedSection.innerText()).includes(MATTER), await filedSection.innerText());
    await page.screenshot({ path: artifact("addon-flow-already-filed.png") });

    // File again: still exactly one filing.
    const own2 = await chooseMatter(page);
    await step(page, () => (own2 || fileButton(page)).click());
    await assertNoErrors(page, "filing again");
    const afterAgain = await sidebarText(page);
    assert.match(afterAgain, new RegExp(`Already filed to[^\\n]*${MATTER}`), afterAgain);
    await page.screenshot({ path: artifact("addon-flow-filed-again.png") });
    filings = await filingsFor(docket.base, `matter:${MATTER}`);
    assert.equal(filings.length, 1, JSON.stringify(filings, null, 2));
    assert.equal(filings[0].id, filing.id);

    // An uploaded .eml joins the dev mailbox, is selected, and opens like any message.
    const eml = "From: Jane Smith <jane.smith@example.org>\r\nTo: Bob Brown <bob@demo.test>\r\n" +
      "Subject: Uploaded: hearing bundle for C-88\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n" +
      "Message-ID: <upload-1@example.org>\r\n\r\nBundle to follow.\r\n";
    await step(page, () => page.getByTestId("eml-file").setInputFiles({ name: "hearing bundle.eml", mimeType: "message/rfc822", buffer: Buffer.from(eml) }));
    await assertNoErrors(page, "uploading an .eml");
    const uploaded = await page.getByTestId("message-select").inputValue();
    assert.ok(uploaded.endsWith(".eml") && uploaded !== sample.value, uploaded);
    assert.match(await page.locator("[data-testid=message-select] option:checked").textContent(), /hearing bundle for C-88/);
    await step(page, () => page.getByTestId("open-message").click());
    await assertNoErrors(page, "opening the uploaded message");
    assert.match(await topCard(page).innerText(), /hearing bundle for C-88/);

    // The homepage: who is signed in, no message in the event.
    await step(page, () => page.getByTestId("open-homepage").click());
    await assertNoErrors(page, "opening the homepage");
    assert.match(await topCard(page).innerText(), /alice@demo\.test/);
    assert.equal((await lastEntry(page)).request.gmail, undefined);
    assert.equal(await page.getByTestId("sidebar").getAttribute("data-stack-depth"), "1");

    // Someone docket does not know opens the message: a card says what to do, and nothing of
    // alice's card stays on screen.
    await page.getByTestId("message-select").selectOption(sample.value);
    await step(page, () => page.getByTestId("open-message").click());
    assert.match(await topCard(page).innerText(), /Already filed/i);
    await page.getByTestId("user-email").fill("stranger@demo.test");
    await step(page, () => page.getByTestId("open-message").click());
    await assertNoErrors(page, "opening the message as someone docket does not know");
    const stranger = await sidebarText(page);
    assert.match(stranger, /not set up in docket yet/i, stranger);
    assert.match(stranger, /administrator/i, stranger);
    assert.doesNotMatch(stranger, /Already filed|alice@demo\.test/i, stranger);
    assert.equal(await page.getByTestId("sidebar").getAttribute("data-stack-depth"), "1");
    await page.screenshot({ path: artifact("addon-flow-stranger.png") });

    assert.deepEqual(pageErrors, []);
    ok = true;
  } catch (err) {
    if (page) {
      await page.screenshot({ path: artifact("addon-flow-failure.png"), fullPage: true }).catch(() => {});
      const log = await page.evaluate(() => JSON.stringify(window.__docketSim && window.__docketSim.state.entries, null, 2)).catch(() => "");
      fs.writeFileSync(artifact("addon-flow-failure-log.json"), log || "");
    }
    fs.writeFileSync(artifact("addon-flow-docket.log"), docket.output());
    console.log(`# failure artifacts in ${path.relative(ROOT, artifact(""))}/ (screenshot, request log, docket output); data dir kept at ${docket.dataDir}`);
    throw err;
  } finally {
    if (browser) await browser.close().catch(() => {});
    await docket.stop();
    if (ok) fs.rmSync(docket.dataDir, { recursive: true, force: true });
  }
});
