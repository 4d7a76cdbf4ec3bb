// The simulator page on its own: served by a tiny static server (no docket), in demo mode
// (?demo=1), which answers every request in-page with an embedded example card.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import { SIMULATOR, artifact, requireChromium, launch, strictCsp, step, errors, lastEntry, topCard } from "./_lib.mjs";

function serveSimulator() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      const url = new URL(req.url, "http://x");
      if (req.method === "GET" && url.pathname === "/dev/addon") {
        const html = fs.readFileSync(SIMULATOR, "utf8");
        res.writeHead(200, {
          "Content-Type": "text/html; charset=utf-8",
          "Content-Security-Policy": strictCsp(html),
          "X-Content-Type-Options": "nosniff",
          "Cache-Control": "no-store",
        });
        res.end(html);
        return;
      }
      res.writeHead(404, { "Content-Type": "application/problem+json" });
      res.end(JSON.stringify({ type: "urn:docket:problem:not-found", status: 404, detail: "static test server" }));
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

test("the simulator renders, submits and navigates the demo card", { timeout: 120_000 }, async (t) => {
  if (!requireChromium(t)) return;
  const server = await serveSimulator();
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  await context.route("https://example.com/**", (r) => r.fulfill({ status: 200, contentType: "text/plain", body: "opened" }));
  try {
    await page.goto(`${base}/dev/addon?demo=1`);
    await page.waitForSelector("body[data-ready='1']");
    await page.evaluate(() => document.addEventListener("securitypolicyviolation", (e) => { (window.__csp ||= []).push(e.violatedDirective); }));

    // The dev mailbox list, then open the sample.
    const options = await page.$$eval("[data-testid=message-select] option", (os) => os.map((o) => o.textContent));
    assert.equal(options.length, 2);
    assert.match(options[0], /M-2024-017.*dana@acme\.com/);
    await step(page, () => page.getByTestId("open-message").click());
    const card = topCard(page);
    assert.equal(await card.getByTestId("card-title").textContent(), "File this email");
    assert.equal(await card.getByTestId("card-subtitle").textContent(), "M-2024-017: revised settlement draft");
    assert.equal(await page.getByTestId("sidebar").getAttribute("data-stack-depth"), "1");
    assert.equal(await page.getByTestId("card-back").isVisible(), false);

    // Sections, decorated text, check boxes, buttons.
    assert.deepEqual(await card.getByTestId("section-header").allTextContents(), ["Suggested", "Attachments", "Details"]);
    const suggestion = card.getByRole("checkbox", { name: /M-2024-017/ });
    assert.equal(await suggestion.isChecked(), false);
    assert.equal(await card.getByRole("checkbox", { name: /settlement-draft\.pdf/ }).isChecked(), true);
    assert.equal(await card.getByRole("checkbox", { name: /logo\.png/ }).isChecked(), true);
    assert.match(await card.getByTestId("bottom-label").first().textContent(), /dana@acme\.com is a contact/);
    assert.equal(await card.locator("[data-testid=top-label]").first().textContent(), "Why M-2024-017");
    assert.equal(await card.locator("[data-testid=decorated-text] b").first().textContent(), "M-2024-017");
    const sidebar = page.getByTestId("sidebar");
    for (const name of ["File", "File here", "Update card", "Request scopes", "Open docket"]) {
      assert.ok(await sidebar.getByRole("button", { name, exact: true }).isEnabled(), `button ${name}`);
    }
    assert.equal(await sidebar.getByRole("button", { name: "Disabled", exact: true }).isDisabled(), true);
    assert.equal(await card.getByTestId("divider").count(), 1);

    // Google's formatting tags become elements; everything else stays text.
    const para = card.getByTestId("paragraph");
    assert.equal(await para.locator("b").textContent(), "bold");
    assert.equal(await para.locator("i").textContent(), "italic");
    assert.equal(await para.locator("span").first().evaluate((e) => e.style.color), "rgb(217, 48, 37)");
    assert.equal(await para.locator("a").first().getAttribute("href"), "https://example.com/");
    assert.equal(await para.locator("a").first().getAttribute("target"), "_blank");
    assert.equal(await para.locator("a").nth(1).getAttribute("href"), null, "javascript: links lose their href");
    assert.equal(await para.locator("br").count(), 1);
    const paraText = await para.textContent();
    assert.ok(paraText.includes('<img src=x onerror="window.__xss=1">'), paraText);
    assert.ok(paraText.includes("<script>window.__xss=2</script> & <tags>"), paraText);
    assert.equal(await page.locator("[data-testid=card-stack] img, [data-testid=card-stack] script").count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);

    await page.screenshot({ path: artifact("simulator-demo-card.png") });

    // Collapsed widgets: shown on demand, still part of the form.
    const notify = card.getByRole("switch", { name: "Notify the matter team" });
    assert.equal(await notify.isVisible(), false);
    await card.getByTestId("section-toggle").click();
    await notify.check();
    await card.getByRole("radio", { name: "Urgent" }).check();
    await card.getByLabel("Record kind").selectOption("case");

    // Fill in and file: formInputs from this card, the button's parameters as a map.
    await suggestion.check();
    await card.getByRole("checkbox", { name: /logo\.png/ }).uncheck();
    await card.getByLabel("Note").fill("Counter-offer <b>draft</b>");
    await page.screenshot({ path: artifact("simulator-demo-filled.png") });
    await step(page, () => sidebar.getByRole("button", { name: "File", exact: true }).click());
    assert.deepEqual(await errors(page), []);
    const sent = await lastEntry(page);
    assert.equal(sent.method, "POST");
    assert.equal(sent.url, "/addon/action?x=1", "an absolute action URL is called on this origin, path and query only");
    assert.equal(sent.headers.Authorization, "Bearer demo.system.token");
    const ev = sent.request;
    assert.deepEqual(ev.commonEventObject.parameters, { op: "file" });
    assert.deepEqual(ev.commonEventObject.formInputs, {
      targets: { stringInputs: { value: ["matter:M-2024-017"] } },
      attachments: { stringInputs: { value: ["0"] } },
      note: { stringInputs: { value: ["Counter-offer <b>draft</b>"] } },
      kind: { stringInputs: { value: ["case"] } },
      priority: { stringInputs: { value: ["urgent"] } },
      notify: { stringInputs: { value: ["yes"] } },
      follow: { stringInputs: { value: ["on"] } },
    });
    assert.equal(ev.commonEventObject.hostApp, "GMAIL");
    assert.equal(ev.authorizationEventObject.systemIdToken, "demo.system.token");
    assert.equal(ev.authorizationEventObject.userIdToken, "demo.user.token");
    assert.equal(ev.authorizationEventObject.userOAuthToken, "demo-oauth");
    assert.equal(ev.authorizationEventObject.authorizedScopes.length, 5);
    assert.ok(ev.authorizationEventObject.authorizedScopes.includes("https://www.googleapis.com/auth/gmail.modify"));
    assert.deepEqual(ev.gmail, { messageId: "msg-f:1659728385805497086", threadId: "thread-f:1659728385805497072", accessToken: "demo-access" });

    // pushCard + notification.
    const toast = page.getByTestId("toast");
    assert.equal(await toast.isVisible(), true);
    assert.match(await toast.textContent(), /Filed to matter:M-2024-017/);
    assert.equal(await topCard(page).getByTestId("card-title").textContent(), "Filed");
    assert.equal(await sidebar.getAttribute("data-stack-depth"), "2");
    assert.equal(await page.getByTestId("card-back").isVisible(), true);
    // The escaped JSON in the pushed paragraph stays text.
    assert.match(await topCard(page).getByTestId("paragraph").textContent(), /"Counter-offer <b>draft<\/b>"/);
    await page.screenshot({ path: artifact("simulator-demo-filed.png") });

    // The debug log: newest first, request and response pretty-printed.
    const first = page.getByTestId("debug-entry").first();
    const stepsNow = Number(await page.getByTestId("debug-log").getAttribute("data-steps"));
    assert.equal(await first.getAttribute("data-step"), String(stepsNow));
    assert.match(await first.getByTestId("debug-request").textContent(), /"formInputs": \{\n/);
    assert.match(await first.getByTestId("debug-response").textContent(), /"pushCard"/);

    // popCard via a card action: the earlier card comes back with its inputs as they were.
    await step(page, () => topCard(page).getByRole("button", { name: "Back", exact: true }).click());
    assert.equal(await topCard(page).getByTestId("card-title").textContent(), "File this email");
    assert.equal(await sidebar.getAttribute("data-stack-depth"), "1");
    assert.equal(await topCard(page).getByRole("checkbox", { name: /M-2024-017/ }).isChecked(), true);
    assert.equal(await topCard(page).getByLabel("Note").inputValue(), "Counter-offer <b>draft</b>");

    // "File here": the button's own parameters carry the target.
    await step(page, () => topCard(page).getByRole("button", { name: "File here", exact: true }).click());
    assert.deepEqual((await lastEntry(page)).request.commonEventObject.parameters, { op: "file", target: "matter:M-2024-017" });
    assert.equal(await sidebar.getAttribute("data-stack-depth"), "2");
    await page.getByTestId("card-back").click(); // the sidebar's own back arrow
    assert.equal(await sidebar.getAttribute("data-stack-depth"), "1");

    // requesting_google_scopes is shown as a notice.
    await step(page, () => sidebar.getByRole("button", { name: "Request scopes", exact: true }).click());
    assert.match(await page.getByTestId("scopes-notice").textContent(), /gmail\.addons\.current\.message\.readonly/);

    // openLink: a new tab, no request to docket.
    const [popup] = await Promise.all([
      context.waitForEvent("page"),
      sidebar.getByRole("button", { name: "Open docket", exact: true }).click(),
    ]);
    await popup.waitForLoadState();
    assert.equal(popup.url(), "https://example.com/docket");
    await popup.close();

    // updateCard replaces the top card.
    await step(page, () => sidebar.getByRole("button", { name: "Update card", exact: true }).click());
    assert.equal(await topCard(page).getByTestId("card-title").textContent(), "Updated card");
    assert.equal(await sidebar.getAttribute("data-stack-depth"), "1");

    // Uploading an .eml adds it to the mailbox and selects it.
    const eml = "From: someone@example.org\r\nTo: alice@demo.test\r\nSubject: Uploaded \u00e9 test\r\n\r\nHello\r\n";
    await step(page, () => page.getByTestId("eml-file").setInputFiles({ name: "upload test.eml", mimeType: "message/rfc822", buffer: Buffer.from(eml, "latin1") }));
    assert.equal(await page.getByTestId("message-select").inputValue(), "upload_test.eml");
    assert.match(await page.getByTestId("mail-subject").textContent(), /Uploaded/);

    // The homepage: a new stack, and no gmail object in the event.
    await step(page, () => page.getByTestId("open-homepage").click());
    assert.equal(await topCard(page).getByTestId("card-title").textContent(), "docket");
    assert.equal((await lastEntry(page)).request.gmail, undefined);

    assert.deepEqual(await page.evaluate(() => window.__csp || []), [], "no CSP violations under a hash-only policy");
    assert.deepEqual(problems, []);
  } catch (err) {
    await page.screenshot({ path: artifact("simulator-demo-failure.png"), fullPage: true }).catch(() => {});
    throw err;
  } finally {
    await browser.close();
    server.close();
  }
});
