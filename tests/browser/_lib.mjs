// Shared helpers for the browser tests (not a test file itself: node --test only runs *.test.mjs here).
import fs from "node:fs";
import path from "node:path";
import net from "node:net";
import os from "node:os";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SIMULATOR = path.join(ROOT, "src/http/simulator.html");
export const ARTIFACTS = path.join(ROOT, "tests/artifacts");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync",
];

/** Skips (locally) or fails (CI) when Chromium is missing. Returns true when the test may go on. */
export function requireChromium(t) {
  if (fs.existsSync(CHROMIUM)) return true;
  const reason = `${CHROMIUM} is missing (install it with: apt-get install -y chromium)`;
  if (process.env.CI) throw new Error(`browser tests need Chromium in CI: ${reason}`);
  console.log(`# skipped: ${reason}`);
  t.skip(reason);
  return false;
}

export async function launch() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function artifact(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}

/** A strict Content-Security-Policy for the simulator: only its own inline <script> and <style>
 *  (by hash), fetches to its own origin. Proves the page needs nothing more. */
export function strictCsp(html) {
  const hash = (re) => [...html.matchAll(re)].map((m) => `'sha256-${crypto.createHash("sha256").update(m[1]).digest("base64")}'`).join(" ");
  const scripts = hash(/<script>([\s\S]*?)<\/script>/g);
  const styles = hash(/<style>([\s\S]*?)<\/style>/g);
  return `default-src 'none'; script-src ${scripts}; style-src ${styles}; connect-src 'self'; img-src 'self' data:; ` +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

/** Steps count in the page's debug log (each request is one). */
export const steps = (page) => page.$eval("[data-testid=debug-log]", (e) => Number(e.dataset.steps));

/** Runs `act` (a click...) and waits until the page made at least one request and is idle again. */
export async function step(page, act, timeout = 30_000) {
  const before = await steps(page);
  await act();
  await page.waitForFunction(
    (n) => Number(document.querySelector("[data-testid=debug-log]").dataset.steps) > n && document.body.dataset.busy === "0",
    before, { timeout });
}

/** Text of the error notices currently shown in the sidebar. */
export const errors = (page) => page.$$eval("[data-testid=error]", (es) => es.map((e) => e.textContent.replace(/^×/, "").trim()));

/** The last request/response the page logged. */
export const lastEntry = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.__docketSim.last)));

/** The card on top of the stack. */
export const topCard = (page) => page.locator("[data-testid=card-stack] > [data-testid=card]:not([hidden])");

export const BIN = process.env.DOCKET_BIN || path.join(ROOT, "target/debug/docket");

/** Starts a real `docket dev` on a free port with its own temp data dir; resolves once
 *  /healthz answers. `prefix` names the data dir. */
export async function startDocket(prefix = "docket-browser-") {
  if (!fs.existsSync(BIN)) {
    throw new Error(`${BIN} does not exist: build it first (cargo build), or set DOCKET_BIN`);
  }
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const child = spawn(BIN, ["dev"], {
    cwd: ROOT,
    // DOCKET_* variables are docket's configuration: start from none of the caller's.
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DOCKET_"))),
      DOCKET_LISTEN: `127.0.0.1:${port}`, DOCKET_DATA_DIR: dataDir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => { output += d; });
  child.stderr.on("data", (d) => { output += d; });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let exit = null;
  exited.then((e) => { exit = e; });
  const killOnExit = () => { try { child.kill("SIGKILL"); } catch { /* gone */ } };
  process.on("exit", killOnExit);
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    process.off("exit", killOnExit);
    if (exit) return;
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exit) throw new Error(`docket dev exited early (${JSON.stringify(exit)}):\n${output}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) { await stop(); throw new Error(`docket dev did not answer /healthz within 60 s:\n${output}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { base, dataDir, stop, output: () => output, exited: () => exit };
}
