// The tenant-admin console in a real browser against a real `docket dev` (issue 4, "Tests"):
// sign in with TOTP (enrolment on first sign-in, a replayed code refused, the next code and a
// recovery code accepted), import a CSV of records (all-or-nothing, then the valid rows), create
// a routing rule, dry-run an .eml and see the match and why, view a filing with its attachments
// and its sandboxed body, and the audit log with its verified chain. Every console page must
// carry a CSP that allows no script at all, and no page may log an error.
//
// Needs target/debug/docket (run `cargo build` first) and Chromium at /usr/bin/chromium.
// On failure: a full-page screenshot and docket's output under tests/artifacts/.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { ROOT, artifact, requireChromium, launch, startDocket } from "./_lib.mjs";

const ADMIN = "alice@demo.test";
const MATTER = "M-2024-017";
const MATTER_TITLE = "Acme v. Widget";


// ---------------------------------------------------------------------------------------
// RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits) and RFC 4648 base32
// ---------------------------------------------------------------------------------------

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/[\s=-]/g, "").toUpperCase()) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error(`not base32: ${JSON.stringify(text)}`);
    value = ((value << 5) | i) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

const STEP = 30;
const currentStep = () => Math.floor(Date.now() / 1000 / STEP);

function totpAt(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const h = crypto.createHmac("sha1", secret).update(counter).digest();
  const offset = h[h.length - 1] & 0x0f;
  return String((h.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

// ---------------------------------------------------------------------------------------
// Fixtures: a CSV with one invalid row, a message with two attachments
// ---------------------------------------------------------------------------------------

const CSV = [
  "kind,reference,title,client,status,contacts,firm_wide,members,excluded",
  "matter,M-2099-101,Browser Holdings v. Example,Browser Holdings,,browser-holdings.example,,,",
  "gadget,X-2099-1,A row with an unknown kind,,,,,,",
  "case,C-2099-102,Browser Holdings appeal,Browser Holdings,open,,true,,",
  "",
].join("\r\n"); // RFC 4180 line ends, as spreadsheets write them

const PDF_BYTES = Buffer.concat([
  Buffer.from("%PDF-1.4\n% docket browser test\n"),
  Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x81, 0x0a]),
  Buffer.from("1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"),
]);
const TXT_BYTES = Buffer.from("Exhibit list\r\n1. Contract\r\n2. Invoice (€ 1.200)\r\n");
const FILING_SUBJECT = "Browser test: engagement letter for M-2024-017";

function filingEml() {
  const b64 = (buf) => buf.toString("base64").replace(/.{1,76}/g, "$&\r\n");
  return [
    "From: Dana Client <dana@acme.com>",
    "To: Alice Adams <alice@demo.test>",
    `Subject: ${FILING_SUBJECT}`,
    "Date: Tue, 17 Nov 2026 10:15:00 +0000",
    `Message-ID: <browser-console-${crypto.randomUUID()}@acme.com>`,
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="outer"',
    "",
    "--outer",
    'Content-Type: multipart/alternative; boundary="inner"',
    "",
    "--inner",
    "Content-Type: text/plain; charset=utf-8",
    "",
    "Alice, the engagement letter and the exhibit list are attached. Dana",
    "--inner",
    "Content-Type: text/html; charset=utf-8",
    "",
    '<p>Alice, the <b>engagement letter</b> and the exhibit list are attached.</p>' +
      '<script>document.title = "pwned"</script><p onclick="alert(1)">Dana</p>' +
      '<img src="https://tracker.example/pixel.gif" alt="">',
    "--inner--",
    "",
    "--outer",
    "Content-Type: application/pdf",
    'Content-Disposition: attachment; filename="Engagement letter.pdf"',
    "Content-Transfer-Encoding: base64",
    "",
    b64(PDF_BYTES),
    "--outer",
    "Content-Type: text/plain; charset=utf-8",
    'Content-Disposition: attachment; filename="exhibits.txt"',
    "Content-Transfer-Encoding: base64",
    "",
    b64(TXT_BYTES),
    "--outer--",
    "",
  ].join("\r\n");
}

// ---------------------------------------------------------------------------------------
// Page helpers
// ---------------------------------------------------------------------------------------

/** The directives of a CSP header, by name. */
function parseCsp(header) {
  const out = {};
  for (const part of (header || "").split(";")) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name) out[name.toLowerCase()] = values;
  }
  return out;
}

/** Fails unless `csp` forbids every script (no script-src, or 'none'; default-src 'none'). */
function assertNoScriptCsp(csp, what) {
  assert.ok(csp, `${what}: no Content-Security-Policy header`);
  const d = parseCsp(csp);
  const scripts = d["script-src"] || d["default-src"];
  assert.ok(scripts, `${what}: the CSP has neither script-src nor default-src: ${csp}`);
  assert.deepEqual(scripts, ["'none'"], `${what}: the CSP allows scripts: ${csp}`);
  for (const k of ["script-src-elem", "script-src-attr"]) {
    if (d[k]) assert.deepEqual(d[k], ["'none'"], `${what}: the CSP allows scripts through ${k}: ${csp}`);
  }
  assert.ok(!/unsafe-inline|unsafe-eval/.test((d["script-src"] || []).join(" ")), `${what}: ${csp}`);
}

test("the admin console: TOTP sign-in, CSV import, rules, dry run, filings, audit log", { timeout: 120_000 }, async (t) => {
  if (!requireChromium(t)) return;
  const started = Date.now();
  const docket = await startDocket("docket-console-");
  const fixtures = fs.mkdtempSync(path.join(os.tmpdir(), "docket-console-fixtures-"));
  let browser, page;
  let failed = false;
  const pageErrors = [];
  const serverErrors = [];
  const blockedImages = [];
  const remoteRequests = [];
  try {
    browser = await launch();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(`page error on ${page.url()}: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() !== "error") return;
      // Chromium logs every 4xx document as "Failed to load resource"; the pages' statuses are
      // checked one by one, and failed sub-resources below.
      if (/^Failed to load resource/.test(m.text())) return;
      // The filed message's remote image, blocked by the body frame's CSP (checked below).
      if (/tracker\.example.*violates the following Content Security Policy directive: "img-src data:"/.test(m.text())) {
        blockedImages.push(m.text());
        return;
      }
      pageErrors.push(`console error on ${page.url()}: ${m.text()}`);
    });
    // Anything from outside docket must be blocked by a CSP before it leaves the browser.
    page.on("requestfinished", (r) => { if (!r.url().startsWith(docket.base)) remoteRequests.push(`loaded ${r.url()}`); });
    page.on("requestfailed", (r) => {
      if (r.url().startsWith(docket.base)) return;
      const why = r.failure()?.errorText || "";
      if (!/^(csp|net::ERR_BLOCKED_BY_CSP)$/.test(why)) remoteRequests.push(`${r.url()}: ${why}`);
    });
    page.on("response", (r) => {
      const what = `${r.status()} ${r.request().method()} ${r.url()}`;
      if (r.status() >= 500) serverErrors.push(what);
      // A sub-resource (style sheet, image, frame) that fails; Chromium asks for /favicon.ico
      // by itself and the console links none.
      else if (r.status() >= 400 && !r.request().isNavigationRequest() && new URL(r.url()).pathname !== "/favicon.ico") {
        pageErrors.push(`failed sub-resource on ${page.url()}: ${what}`);
      }
    });
    const url = (p) => docket.base + p;

    /** Checks a console page's response (status, CSP, no <script>) once it has loaded. */
    const checkPage = async (resp, what, status = 200) => {
      assert.ok(resp, `${what}: no response`);
      const body = resp.status() === status ? "" : `\n${(await page.locator("body").innerText().catch(() => "")).slice(0, 2000)}`;
      assert.equal(resp.status(), status, `${what}: ${resp.request().method()} ${resp.url()} answered ${resp.status()}${body}`);
      assertNoScriptCsp(resp.headers()["content-security-policy"], `${what} (${resp.url()})`);
      assert.equal(await page.locator("script").count(), 0, `${what}: the page has a <script> element`);
      // Dates read as dates (the exact value is on hover); raw data shown as such (code,
      // disclosed JSON) is left alone.
      const prose = await page.evaluate(() => {
        const copy = document.body.cloneNode(true);
        copy.querySelectorAll("code, pre, details, textarea, input").forEach((e) => e.remove());
        return copy.innerText || copy.textContent || "";
      });
      const raw = prose.match(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}[^\s]*/);
      assert.equal(raw, null, `${what}: a raw timestamp is shown: ${raw && raw[0]}`);
      // Errors since this stage began (earlier ones failed their own stage, and the last one).
      assert.deepEqual(pageErrors.slice(mark.page), [], `${what}: the browser logged errors`);
      assert.deepEqual(serverErrors.slice(mark.server), [], `${what}: server errors`);
    };
    /** Opens a console path and checks it. */
    const open = async (p, what, status = 200) => {
      const resp = await page.goto(url(p));
      await checkPage(resp, what, status);
      return resp;
    };
    /** Clicks (a submit button, a link) and waits for the resulting page; returns its response. */
    const submit = async (locator) => {
      const [resp] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), locator.click()]);
      return resp;
    };
    const alertText = () => page.getByRole("alert").allInnerTexts().then((a) => a.join("\n"));
    const mainText = () => page.locator("main").innerText();

    /** One named stage: on failure a full-page screenshot and docket's output. */
    const mark = { page: 0, server: 0 };
    const stage = (name, fn, opts = {}) => t.test(name, opts, async () => {
      mark.page = pageErrors.length;
      mark.server = serverErrors.length;
      try {
        await fn();
      } catch (err) {
        failed = true;
        const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
        const shot = artifact(`console-${slug}-failure.png`);
        await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
        const out = docket.output();
        fs.writeFileSync(artifact("console-docket.log"), out);
        const wrapped = new Error(
          `${name}: ${err.message}\n  page: ${page.url()}\n  screenshot: ${path.relative(ROOT, shot)}\n` +
          `--- docket dev output (last 6000 characters; all in ${path.relative(ROOT, artifact("console-docket.log"))}) ---\n` +
          `${out.slice(-6000)}${docket.exited() ? `\n(docket exited: ${JSON.stringify(docket.exited())})` : ""}`,
          { cause: err });
        throw wrapped;
      }
    });

    // -------------------------------------------------------------------------------------
    // 1. Sign in: password, TOTP enrolment, recovery codes; then again with a TOTP code
    //    (a replayed code is refused) and with a recovery code.
    // -------------------------------------------------------------------------------------
    const password = fs.readFileSync(path.join(docket.dataDir, "dev/console-password"), "utf8").trim();
    let secret = null;
    let lastStep = null;
    let recoveryCodes = [];
    let signedIn = false;

    const signInWithPassword = async () => {
      await open("/console/login", "the sign-in page");
      await page.getByLabel("Email").fill(ADMIN);
      await page.getByLabel("Password").fill(password);
      return submit(page.getByRole("button", { name: "Sign in" }));
    };
    const signOut = async () => {
      const resp = await submit(page.getByRole("button", { name: "Sign out" }));
      assert.equal(new URL(page.url()).pathname, "/console/login", "signing out leads to the sign-in page");
      await checkPage(resp, "the sign-in page after signing out");
      // Signed out: the console sends us back to sign in.
      const again = await page.goto(url("/console/records"));
      assert.equal(new URL(page.url()).pathname, "/console/login", "after signing out /console/records asks to sign in");
      await checkPage(again, "the sign-in page (signed out)");
    };

    await stage("sign in with TOTP enrolment", async () => {
      // Unsigned, the console asks to sign in.
      const first = await page.goto(url("/console"));
      assert.equal(new URL(page.url()).pathname, "/console/login");
      await checkPage(first, "the sign-in page");

      // A wrong password is refused on the page.
      await page.getByLabel("Email").fill(ADMIN);
      await page.getByLabel("Password").fill(`${password}-wrong`);
      const posted = page.waitForRequest((r) => r.method() === "POST");
      const wrong = await submit(page.getByRole("button", { name: "Sign in" }));
      const sent = await (await posted).allHeaders();
      // A same-origin form post must pass the console's cross-site check (Chromium sends
      // `Sec-Fetch-Site: same-origin`; under a no-referrer policy its Origin would be `null`).
      assert.notEqual(wrong.status(), 403,
        `a same-origin sign-in form post is refused as CSRF: ${await page.locator("body").innerText()}\n` +
        `  the browser sent Origin: ${sent.origin}, Sec-Fetch-Site: ${sent["sec-fetch-site"]}; ` +
        `the sign-in page said Referrer-Policy: ${(await first.allHeaders())["referrer-policy"]}`);
      assert.equal(wrong.status(), 401, `a wrong password answers 401, not ${wrong.status()}`);
      assert.ok((await alertText()).length > 0, "a wrong password shows an error");
      assert.equal(new URL(page.url()).pathname, "/console/login");

      // The first sign-in requires enrolling an authenticator.
      const enrol = await signInWithPassword();
      assert.equal(new URL(page.url()).pathname, "/console/totp/enrol", "the first sign-in goes to the enrolment");
      await checkPage(enrol, "the enrolment page");
      const qr = page.getByRole("img", { name: /QR code/ });
      assert.equal(await qr.count(), 1, "the enrolment page shows a QR code");
      assert.match(await qr.getAttribute("src"), /^data:image\/svg\+xml/, "the QR code is a data: URL (img-src data:)");
      const shown = (await page.getByLabel("Secret key").innerText()).trim();
      assert.match(shown, /^[A-Z2-7 =]{16,}$/, `the secret key is base32: ${JSON.stringify(shown)}`);
      secret = base32Decode(shown);
      assert.ok(secret.length >= 10, `the secret has ${secret.length} bytes`);

      // A wrong code is refused and the same secret is shown again.
      const now = currentStep();
      const near = [now - 1, now, now + 1, now + 2].map((st) => totpAt(secret, st));
      const bad = ["000000", "111111", "222222", "333333", "444444"].find((c) => !near.includes(c));
      await page.getByLabel("Authentication code").fill(bad);
      const refused = await submit(page.getByRole("button", { name: "Confirm" }));
      await checkPage(refused, "the enrolment page after a wrong code", 422);
      assert.match(await alertText(), /does not match/i);
      assert.equal((await page.getByLabel("Secret key").innerText()).trim(), shown, "the same secret after a wrong code");

      // The current code confirms: recovery codes, shown once.
      const step = currentStep();
      await page.getByLabel("Authentication code").fill(totpAt(secret, step));
      const codesPage = await submit(page.getByRole("button", { name: "Confirm" }));
      await checkPage(codesPage, "the recovery codes page");
      lastStep = step;
      assert.match(await page.getByRole("status").innerText(), /Two-step sign-in is set up/);
      recoveryCodes = (await page.getByRole("list", { name: "Recovery codes" }).locator("code").allInnerTexts()).map((c) => c.trim());
      assert.ok(recoveryCodes.length >= 5, `recovery codes: ${JSON.stringify(recoveryCodes)}`);
      assert.equal(new Set(recoveryCodes).size, recoveryCodes.length, "the recovery codes are distinct");
      for (const c of recoveryCodes) assert.match(c, /^[A-Za-z0-9]{4,}(-[A-Za-z0-9]{4,})*$/, `recovery code ${c}`);

      // Continue to the console: signed in as alice at Demo LLP.
      const home = await submit(page.getByRole("link", { name: /continue to the console/i }));
      await checkPage(home, "the console home");
      assert.equal(new URL(page.url()).pathname, "/console");
      assert.match(await page.locator("header").innerText(), /Demo LLP[\s\S]*alice@demo\.test/);
      assert.equal(await page.getByRole("navigation", { name: "Console sections" }).getByRole("link").count() >= 8, true);
      signedIn = true;
    });

    await stage("sign in again: a replayed code is refused, the next code works", async () => {
      signedIn = false;
      await signOut();
      const second = await signInWithPassword();
      assert.equal(new URL(page.url()).pathname, "/console/login/second-factor", "an enrolled admin is asked for a code");
      await checkPage(second, "the second-factor page");
      assert.match(await page.locator("body").innerText(), /alice@demo\.test/);

      // Before the second factor, the console is out of reach.
      const pending = await page.goto(url("/console/audit"));
      assert.equal(new URL(page.url()).pathname, "/console/login/second-factor", "a half-signed-in session cannot open the console");
      await checkPage(pending, "the second-factor page (redirected)");

      // The code used to enrol is refused (replay), whatever the time now.
      await page.getByLabel("Authentication code").fill(totpAt(secret, lastStep));
      const replay = await submit(page.getByRole("button", { name: "Verify" }));
      await checkPage(replay, "the second-factor page after a replayed code", 401);
      assert.match(await alertText(), /not correct \(or was already used\)/);

      // The next step's code (within the ±1 step window) is accepted.
      const step = Math.max(currentStep(), lastStep + 1);
      await page.getByLabel("Authentication code").fill(totpAt(secret, step));
      const home = await submit(page.getByRole("button", { name: "Verify" }));
      await checkPage(home, "the console home after the second factor");
      assert.equal(new URL(page.url()).pathname, "/console");
      lastStep = step;
      signedIn = true;
    }, { skip: !signedIn && "the first sign-in failed" });

    await stage("sign in with a recovery code", async () => {
      signedIn = false;
      await signOut();
      await signInWithPassword();
      assert.equal(new URL(page.url()).pathname, "/console/login/second-factor");
      await page.getByLabel("Authentication code").fill(recoveryCodes[0]);
      const home = await submit(page.getByRole("button", { name: "Verify" }));
      await checkPage(home, "the console home after a recovery code");
      assert.equal(new URL(page.url()).pathname, "/console");
      signedIn = true;

      // The page "My security" counts one code fewer.
      await open("/console/security", "My security");
      const text = await mainText();
      assert.match(text, new RegExp(`\\b${recoveryCodes.length - 1}\\b`), `My security shows ${recoveryCodes.length - 1} recovery codes left:\n${text}`);
    }, { skip: !signedIn && "not signed in" });

    // -------------------------------------------------------------------------------------
    // 2. Records: CSV import (all-or-nothing; then the valid rows), the new records listed.
    // -------------------------------------------------------------------------------------
    await stage("import a CSV of records", async () => {
      const csvPath = path.join(fixtures, "records.csv");
      fs.writeFileSync(csvPath, CSV);

      await open("/console/records", "the records list");
      const importLink = page.getByRole("link", { name: /Import records from a CSV file/ });
      await checkPage(await submit(importLink), "the import page");
      assert.equal(new URL(page.url()).pathname, "/console/records/import");

      // One invalid row: the per-row report, and nothing imported.
      await page.getByLabel("CSV file").setInputFiles(csvPath);
      const report = await submit(page.getByRole("button", { name: "Import" }));
      await checkPage(report, "the import report (one invalid row)", 422);
      assert.match(await alertText(), /Nothing was imported: 1 of 3 rows have errors/);
      const rows = await page.locator("main table tbody tr").evaluateAll((trs) =>
        trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.innerText.trim())));
      assert.equal(rows.length, 3, `the report lists every row: ${JSON.stringify(rows)}`);
      assert.deepEqual(rows.map((r) => r.slice(1, 3)), [
        ["M-2099-101", "valid"],
        ["X-2099-1", "error"],
        ["C-2099-102", "valid"],
      ]);
      // The lines of the file (the header is line 1); checked at the end of this stage.
      const lines = rows.map((r) => r[0]);
      assert.match(rows[1][3], /unknown record kind "gadget": expected matter, case or contract/);
      assert.equal(await page.locator("main p.flash").count(), 0, "no 'Imported' flash when nothing was imported");

      await open("/console/records?q=2099", "the records list (after the refused import)");
      assert.match(await mainText(), /No records match/, "the refused import wrote nothing");

      // Again, importing the valid rows.
      await open("/console/records/import", "the import page");
      await page.getByLabel("CSV file").setInputFiles(csvPath);
      await page.getByLabel("Import the valid rows even if some rows have errors").check();
      const done = await submit(page.getByRole("button", { name: "Import" }));
      await checkPage(done, "the import report (valid rows imported)");
      assert.match(await page.getByRole("status").innerText(), /^Imported 2 records$/);
      assert.match(await mainText(), /Imported 2 records\./);

      // Both appear in the list, with their titles and kinds.
      await open("/console/records?q=2099", "the records list (filtered)");
      const listed = await page.locator("main table tbody tr").allInnerTexts();
      assert.equal(listed.length, 2, `two imported records: ${JSON.stringify(listed)}`);
      assert.ok(listed.some((r) => /matter\s+M-2099-101\s+Browser Holdings v\. Example\s+Browser Holdings\s+open\s+the whole firm/.test(r)), JSON.stringify(listed));
      assert.ok(listed.some((r) => /case\s+C-2099-102\s+Browser Holdings appeal/.test(r)), JSON.stringify(listed));
      assert.ok(!listed.some((r) => /X-2099-1/.test(r)), "the invalid row was skipped");
      // ...and open.
      await submit(page.getByRole("link", { name: "M-2099-101" }));
      assert.match(new URL(page.url()).pathname, /^\/console\/records\/[^/]+$/);
      assert.match(await mainText(), /Browser Holdings v\. Example/);
      assert.equal(await page.getByLabel(/^Contacts/).inputValue(), "browser-holdings.example");

      assert.deepEqual(lines, ["2", "3", "4"],
        "the report numbers rows by their line in the file (header = line 1) for a CRLF file too");
    }, { skip: !signedIn && "not signed in" });

    // -------------------------------------------------------------------------------------
    // 3. Rules: create "Acme mail" (from domain acme.com → suggest the matter).
    // -------------------------------------------------------------------------------------
    let ruleCreated = false;
    await stage("create a routing rule", async () => {
      await open("/console/rules", "the rules list");
      await checkPage(await submit(page.getByRole("link", { name: "New rule" })), "the new rule form");
      assert.equal(new URL(page.url()).pathname, "/console/rules/new");

      await page.getByRole("textbox", { name: "Name" }).fill("Acme mail");
      await page.getByRole("combobox", { name: /^Condition 1 field/ }).selectOption({ label: "From" });
      await page.getByRole("combobox", { name: /^Condition 1 operator/ }).selectOption({ label: "is in domain" });
      await page.getByRole("textbox", { name: "Condition 1 value" }).fill("acme.com");
      await page.getByRole("combobox", { name: /^Action/ }).selectOption({ label: "Suggest" });
      // Targets are typed, with the open records as the field's native suggestions.
      const offered = await page.locator("datalist#open-records option").evaluateAll((os) => os.map((o) => [o.value, o.textContent]));
      assert.ok(offered.some(([v, t]) => v === `matter:${MATTER}` && t === MATTER_TITLE), `the target field offers matter:${MATTER}: ${JSON.stringify(offered)}`);
      await page.getByLabel("Add a target", { exact: true }).fill(`matter:${MATTER}`);
      assert.equal(await page.getByRole("checkbox", { name: "Enabled" }).isChecked(), true, "a new rule is enabled by default");

      const listResp = await submit(page.getByRole("button", { name: "Create rule" }));
      await checkPage(listResp, "the rules list after creating");
      assert.equal(new URL(page.url()).pathname, "/console/rules");
      assert.equal(await page.getByRole("status").innerText(), "Rule created");
      const row = page.locator("main table tbody tr").filter({ has: page.getByRole("link", { name: "Acme mail" }) });
      assert.equal(await row.count(), 1, `the list shows the rule:\n${await mainText()}`);
      const cells = (await row.locator("td").allInnerTexts()).map((s) => s.trim());
      assert.match(cells[2], /from.*domain.*acme\.com/i, `conditions: ${cells[2]}`);
      assert.equal(cells[3], "Suggest");
      assert.equal(cells[4], `matter:${MATTER}`);
      assert.match(cells[5], /enabled/);
      ruleCreated = true;

      // A rule without a name is refused on the form, which keeps what was typed.
      await open("/console/rules/new", "the new rule form");
      await page.getByRole("textbox", { name: "Condition 1 value" }).fill("acme.com");
      await page.getByRole("textbox", { name: "Name" }).fill("   ");
      const refused = await submit(page.getByRole("button", { name: "Create rule" }));
      assert.ok(refused.status() >= 400 && refused.status() < 500, `a blank name answers 4xx, not ${refused.status()}`);
      await checkPage(refused, "the new rule form with an error", refused.status());
      assert.ok((await alertText()).length > 0, "the error is shown");
      assert.equal(await page.getByRole("textbox", { name: "Condition 1 value" }).inputValue(), "acme.com");
      await open("/console/rules", "the rules list");
      assert.equal(await page.locator("main table tbody tr").count(), 1, "the refused rule was not created");
    }, { skip: !signedIn && "not signed in" });

    // -------------------------------------------------------------------------------------
    // 4. Dry run: the Acme sample matches the rule, and the page says why.
    // -------------------------------------------------------------------------------------
    await stage("dry-run an .eml", async () => {
      const sample = path.join(docket.dataDir, "dev/sample.eml");
      assert.ok(fs.existsSync(sample), `${sample} exists`);
      await open("/console/rules", "the rules list");
      await checkPage(await submit(page.getByRole("link", { name: "Dry run" })), "the dry-run page");
      assert.equal(new URL(page.url()).pathname, "/console/rules/dry-run");

      // Nothing chosen: a clear error.
      const empty = await submit(page.getByRole("button", { name: "Run rules" }));
      await checkPage(empty, "the dry-run page with nothing chosen", 422);
      assert.match(await alertText(), /Choose a message \(\.eml\) file or enter a filing id/);

      await open("/console/rules/dry-run", "the dry-run page");
      await page.getByLabel("Message (.eml)").setInputFiles(sample);
      const result = await submit(page.getByRole("button", { name: "Run rules" }));
      await checkPage(result, "the dry-run result");
      const text = await mainText();
      assert.match(text, /sample\.eml:\s*Re: Acme v\. Widget - draft settlement \(M-2024-017\)\s+from dana@acme\.com/, text);
      assert.match(text, /Draft settlement\.pdf/, "the attachment is listed");
      const rule = page.locator("ol.dry-run > li").filter({ hasText: "Acme mail" });
      assert.equal(await rule.count(), 1, `the rule is listed:\n${text}`);
      const ruleText = await rule.innerText();
      assert.match(ruleText, /Acme mail\s+Suggest\s+matched/, ruleText);
      assert.match(ruleText, /✓\s*from dana@acme\.com is in domain acme\.com/, `the reason: ${ruleText}`);
      const outcome = await page.locator("ul.outcome").innerText();
      assert.match(outcome, new RegExp(`Suggested: matter:${MATTER} — ${MATTER_TITLE} \\(rule Acme mail\\)`), outcome);
      assert.doesNotMatch(outcome, /Filed automatically/);
      assert.match(text, /Nothing is filed or changed/);

      // A message from elsewhere does not match, and the page says why not.
      const other = path.join(fixtures, "other.eml");
      fs.writeFileSync(other, "From: Someone <someone@globex.example>\r\nTo: alice@demo.test\r\nSubject: Lunch?\r\n" +
        "Date: Tue, 17 Nov 2026 12:00:00 +0000\r\nMessage-ID: <lunch-1@globex.example>\r\n\r\nNoon?\r\n");
      await open("/console/rules/dry-run", "the dry-run page");
      await page.getByLabel("Message (.eml)").setInputFiles(other);
      await checkPage(await submit(page.getByRole("button", { name: "Run rules" })), "the dry-run result (no match)");
      const miss = await page.locator("ol.dry-run > li").filter({ hasText: "Acme mail" }).innerText();
      assert.match(miss, /not matched/, miss);
      assert.match(miss, /✗\s*no from address is in domain acme\.com \(from: someone@globex\.example\)/, miss);
      assert.match(await page.locator("ul.outcome").innerText(), /Nothing: no rule routes this message/);
    }, { skip: (!signedIn && "not signed in") || (!ruleCreated && "the rule was not created") });

    // -------------------------------------------------------------------------------------
    // 5. A filing with attachments (filed through the API), seen in the console.
    // -------------------------------------------------------------------------------------
    await stage("view a filing and its attachments", async () => {
      const tok = await fetch(url("/dev/token"), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ email: ADMIN }) });
      const tokJson = await tok.json();
      assert.equal(tok.status, 200, `POST /dev/token: ${JSON.stringify(tokJson)}`);
      const eml = filingEml();
      const filed = await fetch(url("/v1/filings"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${tokJson.token}` },
        body: JSON.stringify({ raw: Buffer.from(eml).toString("base64url"), targets: [{ kind: "matter", id: MATTER }], note: "Filed by the browser test" }),
      });
      const filedJson = await filed.json();
      assert.equal(filed.status, 201, `POST /v1/filings: ${JSON.stringify(filedJson)}`);
      const filing = filedJson.filings[0];
      assert.equal(filing.attachments.length, 2, JSON.stringify(filing));

      // The list: the filing, its record, the count of attachments.
      await open("/console/filings", "the filings list");
      const row = page.locator("main table tbody tr").filter({ hasText: FILING_SUBJECT });
      assert.equal(await row.count(), 1, `the filings list shows the filing:\n${await mainText()}`);
      const rowText = await row.innerText();
      assert.match(rowText, new RegExp(`matter\\s+${MATTER}`), rowText);
      assert.match(rowText, /dana@acme\.com/, rowText);
      assert.match(rowText, /alice@demo\.test/, rowText);
      assert.match(rowText, /\b2\b/, `two attachments: ${rowText}`);

      // Filtered by record.
      await page.getByLabel("Record").fill(`matter:${MATTER}`);
      await checkPage(await submit(page.getByRole("button", { name: "Filter" })), "the filings list filtered by record");
      assert.equal(await page.locator("main table tbody tr").filter({ hasText: FILING_SUBJECT }).count(), 1);

      // Open it: metadata.
      const detail = await submit(page.getByRole("link", { name: FILING_SUBJECT }));
      await checkPage(detail, "the filing page");
      assert.equal(new URL(page.url()).pathname, `/console/filings/${filing.id}`);
      assert.equal(await page.getByRole("heading", { level: 1 }).innerText(), FILING_SUBJECT);
      const facts = Object.fromEntries(await page.locator("table.facts tr").evaluateAll((trs) =>
        trs.map((tr) => [tr.querySelector("th").innerText.trim(), tr.querySelector("td").innerText.trim()])));
      assert.equal(facts.Record, `matter ${MATTER} — ${MATTER_TITLE}`, JSON.stringify(facts));
      assert.match(facts.Filed, /by alice@demo\.test/, JSON.stringify(facts));
      assert.equal(facts.Note, "Filed by the browser test");
      assert.equal(facts.From, "Dana Client <dana@acme.com>");
      assert.equal(facts.To, "Alice Adams <alice@demo.test>");
      assert.match(facts["Message-ID"], /browser-console-.*@acme\.com/);
      const sha = crypto.createHash("sha256").update(eml).digest("hex");
      assert.equal(facts["Size / SHA-256"], `${Buffer.byteLength(eml)} bytes · ${sha}`);

      // The attachments: each downloads as an attachment, byte for byte.
      for (const [name, bytes] of [["Engagement letter.pdf", PDF_BYTES], ["exhibits.txt", TXT_BYTES]]) {
        const link = page.getByRole("link", { name: `Download ${name}` });
        assert.equal(await link.count(), 1, `a download link for ${name}`);
        const href = await link.getAttribute("href");
        assert.match(href, new RegExp(`^/console/filings/${filing.id}/attachments/\\d+$`));
        const r = await page.request.get(url(href));
        assert.equal(r.status(), 200, `GET ${href}: ${r.status()} ${await r.text()}`);
        const h = r.headers();
        assert.match(h["content-disposition"] || "", /^attachment;/, `Content-Disposition of ${name}: ${h["content-disposition"]}`);
        assert.match(h["content-disposition"], new RegExp(`filename="${name.replace(/\./g, "\\.")}"`));
        assert.equal(h["content-type"], "application/octet-stream");
        assert.equal(h["x-content-type-options"], "nosniff");
        assert.ok(Buffer.compare(await r.body(), bytes) === 0, `${name} downloads byte for byte`);
      }
      const raw = page.getByRole("link", { name: /Download the original message/ });
      const rawResp = await page.request.get(url(await raw.getAttribute("href")));
      assert.equal(rawResp.status(), 200);
      assert.match(rawResp.headers()["content-disposition"] || "", /^attachment;/);
      assert.equal((await rawResp.body()).toString(), eml, "the original message downloads byte for byte");

      // The body: a sandboxed frame under its own CSP, sanitised (no script, no remote image).
      const frameEl = page.locator("iframe[title='Message body']");
      assert.equal(await frameEl.count(), 1, "the body frame is there");
      assert.equal(await frameEl.getAttribute("sandbox"), "", "the frame is fully sandboxed (sandbox with no allowances)");
      const bodyUrl = url(await frameEl.getAttribute("src"));
      const bodyResp = await page.request.get(bodyUrl);
      assert.equal(bodyResp.status(), 200);
      const bodyCsp = bodyResp.headers()["content-security-policy"];
      assert.ok(parseCsp(bodyCsp).sandbox, `the body has CSP sandbox: ${bodyCsp}`);
      assertNoScriptCsp(bodyCsp, "the message body");
      const bodyHtml = await bodyResp.text();
      assert.doesNotMatch(bodyHtml, /<script|onclick|pwned/i, `the body is sanitised:\n${bodyHtml}`);
      const frame = await (await frameEl.elementHandle()).contentFrame();
      assert.ok(frame, "the frame loaded");
      await frame.waitForLoadState("load");
      assert.match(await frame.locator("body").innerText(), /the engagement letter and the exhibit list are attached/);
      assert.notEqual(await page.title(), "pwned");
      // The remote image never loads (the frame's CSP allows data: images only).
      assert.deepEqual(remoteRequests, [], "the browser fetched nothing from outside docket (every try blocked by the CSP)");
      if (/tracker\.example/.test(bodyHtml)) assert.equal(blockedImages.length, 1, "the remote image was blocked by the CSP");
      assert.deepEqual(pageErrors.slice(mark.page), [], "the browser logged errors on the filing page");
    }, { skip: !signedIn && "not signed in" });

    // A filing made by mistake: removed from its page with a reason, which the audit log keeps.
    await stage("remove a filing with a reason", async () => {
      const tok = await (await fetch(url("/dev/token"), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ email: ADMIN }) })).json();
      const subject = "Browser test: filed by mistake";
      const eml = filingEml().replace(FILING_SUBJECT, subject);
      const filed = await fetch(url("/v1/filings"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${tok.token}` },
        body: JSON.stringify({ raw: Buffer.from(eml).toString("base64url"), targets: [{ kind: "matter", id: MATTER }] }),
      });
      assert.equal(filed.status, 201);
      const id = (await filed.json()).filings[0].id;
      await open(`/console/filings/${id}`, "the filing to remove");
      const reason = page.getByLabel("Reason");
      assert.equal(await reason.getAttribute("required"), "", "a reason is required before the form is sent");
      await reason.fill("Personal mail, filed by mistake");
      await page.screenshot({ path: artifact("console-filing-remove.png"), fullPage: true });
      await checkPage(await submit(page.getByRole("button", { name: "Remove filing" })), "the audit log after the removal");
      assert.equal(new URL(page.url()).pathname, "/console/audit");
      const removed = page.locator("main table tbody tr[data-action='filing.removed']");
      assert.equal(await removed.count(), 1, await mainText());
      assert.match(await removed.locator("td.what").innerText(), new RegExp(`removed the filing of a message to ${MATTER}.*filed by .*Personal mail, filed by mistake`));
      assert.equal((await page.request.get(url(`/console/filings/${id}`))).status(), 404, "the removed filing is gone");
      await open("/console/filings", "the filings list after the removal");
      assert.equal(await page.locator("main table tbody tr").filter({ hasText: subject }).count(), 0);
    }, { skip: !signedIn && "not signed in" });

    // -------------------------------------------------------------------------------------
    // 6. Audit log: the chain verifies, and what was done above is there.
    // -------------------------------------------------------------------------------------
    await stage("view the audit log", async () => {
      await open("/console", "the console home");
      // The home page is a dashboard: counts, the chain, and the weekly chart (SVG, no script).
      assert.equal(await page.locator("main svg.chart rect").count(), 12, "twelve weeks of filings");
      assert.match(await page.locator("main").innerText(), /Filings per week[\s\S]*Audit chain\s+intact/);
      await page.screenshot({ path: artifact("console-home.png"), fullPage: true });
      await checkPage(await submit(page.getByRole("navigation", { name: "Console sections" }).getByRole("link", { name: "Audit log" })), "the audit log");
      assert.equal(new URL(page.url()).pathname, "/console/audit");
      const chain = await page.locator("#chain-status").innerText();
      assert.match(chain, /^Chain verified: \d+ entries intact/, chain);
      // Each entry: [seq, when, sentence, actor, action, raw detail]; the raw entry is behind
      // a disclosure.
      const entries = await page.locator("main table tbody tr").evaluateAll((trs) =>
        trs.map((tr) => {
          const td = [...tr.querySelectorAll(":scope > td")].map((c) => c.innerText.trim());
          return [td[0], td[1], td[2], tr.dataset.actor, tr.dataset.action, tr.querySelector("pre").textContent];
        }));
      const actions = entries.map((e) => e[4]);
      for (const action of ["login.failed", "totp.enrolled", "login.succeeded", "recovery_code.used",
        "records.imported", "rule.created", "filing.created"]) {
        assert.ok(actions.includes(action), `the audit log has ${action}: ${JSON.stringify(actions)}`);
      }
      const imported = entries.filter((e) => e[4] === "records.imported");
      assert.equal(imported.length, 1, "one import (the refused one wrote nothing)");
      assert.equal(imported[0][3], ADMIN, "the import is by alice");
      assert.match(imported[0][2], /^Alice\b.* imported 2 records$/, "the entry reads as a sentence");
      assert.match(imported[0][5], /"imported":\s*2/, imported[0][5]);
      assert.match(imported[0][5], /"invalid_rows_skipped":\s*1/, imported[0][5]);
      assert.equal(entries.filter((e) => e[4] === "login.succeeded").length >= 2, true, "two completed sign-ins after enrolment");
      for (const e of entries.filter((x) => ["rule.created", "records.imported", "totp.enrolled"].includes(x[4]))) {
        assert.equal(e[3], ADMIN, `${e[4]} by ${e[3]}`);
      }
      // A filing reads "… filed <subject> to <record>", and its subject links to the filing.
      const filed = entries.find((e) => e[4] === "filing.created");
      assert.match(filed[2], / filed .+ to /, filed[2]);
      const filingLink = page.locator("main table tbody tr[data-action='filing.created'] td.what em a").first();
      assert.match(await filingLink.getAttribute("href"), /^\/console\/filings\/[0-9a-f]+$/);
      assert.equal(await page.locator("main details[open]").count(), 0, "raw entries start closed");
      // Newest first.
      const seqs = entries.map((e) => Number(e[0]));
      assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), "entries are newest first");

      // Filtering by an action prefix.
      await page.getByLabel("Action").fill("rule.");
      await checkPage(await submit(page.getByRole("button", { name: "Filter" })), "the audit log filtered");
      const filtered = await page.locator("main table tbody tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.action));
      assert.ok(filtered.length >= 1 && filtered.every((a) => a.startsWith("rule.")), JSON.stringify(filtered));
      await page.screenshot({ path: artifact("console-audit.png"), fullPage: true });
    }, { skip: !signedIn && "not signed in" });

    // -------------------------------------------------------------------------------------
    // 7. Every console page at a desktop and a phone size: screenshots to review (under
    //    tests/artifacts/pages/), no page wider than the screen, no short value (a reference,
    //    an address, a date, a tag) broken across lines.
    // -------------------------------------------------------------------------------------
    await stage("every page at 1280x900 and 390x844", async () => {
      const firstLink = async (p, sel) => {
        await open(p, p);
        return page.locator(sel).first().getAttribute("href");
      };
      const user = await firstLink("/console/users", "main table tbody a");
      const record = await firstLink("/console/records", "main table tbody a");
      const filing = await firstLink("/console/filings", "main table tbody a[href^='/console/filings/']");
      const rule = await firstLink("/console/rules", "main table tbody a[href^='/console/rules/']");
      const pages = [
        ["home", "/console"], ["users", "/console/users"], ["user", user], ["groups", "/console/groups"],
        ["records", "/console/records"], ["record", record], ["records-import", "/console/records/import"],
        ["rules", "/console/rules"], ["rule", rule], ["rule-new", "/console/rules/new"],
        ["dry-run", "/console/rules/dry-run"], ["retention", "/console/retention"], ["holds", "/console/holds"],
        ["privacy", "/console/privacy"], ["filings", "/console/filings"], ["filing", filing],
        ["audit", "/console/audit"], ["sign-ins", "/console/sign-ins"], ["resets", "/console/resets"],
        ["tokens", "/console/tokens"], ["security", "/console/security"], ["firm-settings", "/console/tenant"],
      ];
      fs.mkdirSync(artifact("pages"), { recursive: true });
      for (const [width, height] of [[1280, 900], [390, 844]]) {
        await page.setViewportSize({ width, height });
        for (const [name, p] of pages) {
          assert.ok(p, `a link to the ${name} page`);
          await open(p, `${name} at ${width}px`);
          await page.screenshot({ path: artifact(`pages/${name}-${width}.png`), fullPage: true });
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(overflow <= 1, `${name} at ${width}px is ${overflow}px wider than the screen`);
          const broken = await page.evaluate(() =>
            // A token: a date, a tag, code, or a link without spaces (a reference, an address).
            [...document.querySelectorAll("main a, main code, main .tag, main .ref, main time, header a, nav a")]
              .filter((e) => e.matches("time, .tag, .ref") || !/\s/.test(e.textContent.trim()))
              .filter((e) => !e.closest("pre, details, .secret") && e.getClientRects().length > 1)
              .map((e) => e.textContent.trim()));
          assert.deepEqual(broken, [], `${name} at ${width}px breaks values across lines`);
        }
      }
      await page.setViewportSize({ width: 1280, height: 900 });
    }, { skip: !signedIn && "not signed in" });

    await stage("no browser or server errors", async () => {
      assert.deepEqual(pageErrors, []);
      assert.deepEqual(serverErrors, []);
    });
    console.log(`# console browser test took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    failed = true;
    if (page) await page.screenshot({ path: artifact("console-failure.png"), fullPage: true }).catch(() => {});
    fs.writeFileSync(artifact("console-docket.log"), docket.output());
    throw new Error(`${err.message}\n--- docket dev output ---\n${docket.output().slice(-6000)}`, { cause: err });
  } finally {
    if (browser) await browser.close().catch(() => {});
    await docket.stop();
    fs.rmSync(fixtures, { recursive: true, force: true });
    if (failed) console.log(`# failure artifacts in ${path.relative(ROOT, artifact(""))}/; data dir kept at ${docket.dataDir}`);
    else fs.rmSync(docket.dataDir, { recursive: true, force: true });
  }
});
