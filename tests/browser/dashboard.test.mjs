// dashboard.test.mjs - the registry dashboard in a real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): the page loads from the registry, follows
// the live stream, and a deploy submitted while the page is open appears on it without a
// reload.
//
// usage: node dashboard.test.mjs URL
//   SUBMIT_CMD   shell command that submits a deploy and prints its deployment id
//   SUBMIT_VERSION  the version that command deploys (looked for on the page)
//   SUBMIT_TARGET   "service/environment" it deploys to
//   CANARY_TARGET, CANARY_TEXT, CANARY_BOXES   (optional) a target with a canary under way,
//                   the text its step tracker must contain, and its boxes' classes ("done,current,,")
//   SCREENSHOT   optional path: a PNG of the page at the end
//   CHROMIUM     browser binary (default /usr/bin/chromium)
//   TOKEN        optional: the registry wants this bearer token; the test types it into
//                the page's token form, as a person would
// Exit 0 on success, 1 with "FAIL: reason" on stderr.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.argv[2];
const { SUBMIT_CMD, SUBMIT_VERSION, SUBMIT_TARGET, SCREENSHOT, TOKEN } = process.env;
if (!url || !SUBMIT_CMD || !SUBMIT_VERSION || !SUBMIT_TARGET) {
  console.error("usage: SUBMIT_CMD=... SUBMIT_VERSION=... SUBMIT_TARGET=svc/env node dashboard.test.mjs URL");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "dq-chromium-"));
let browser, page;
function fail(msg) {
  console.error("FAIL: " + msg);
  process.exitCode = 1;
}

try {
  // a persistent context is how playwright passes a fresh --user-data-dir (profile)
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 1000 },
    timeout: 60000,
  });
  page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    // the first, token-less requests are expected to be refused
    if (m.type() === "error" && !(TOKEN && /status of 401/.test(m.text()))) errors.push(m.text());
  });
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });

  await page.goto(url, { waitUntil: "load", timeout: 30000 });
  if (TOKEN) {
    // the API answered 401: the page asks for the token, then loads with it
    await page.waitForSelector("#auth #token", { state: "visible", timeout: 30000 });
    await page.fill("#auth #token", TOKEN);
    await page.click('#auth button[type="submit"]');
  }
  // the stream is open and the grid shows what the registry already holds
  await page.waitForSelector('[data-testid="connection"].live', { timeout: 30000 });
  await page.waitForSelector(`[data-testid="grid"] table`, { timeout: 30000 });
  const loadedAt = await page.evaluate(() => window.deployqDashboard.loadedAt);
  console.log("# dashboard loaded and live");

  // a canary under way: its target's cell has the step tracker (one box per step)
  if (process.env.CANARY_TARGET) {
    const sel = `[data-target="${process.env.CANARY_TARGET}"] [data-testid="canary"]`;
    await page.waitForSelector(sel, { timeout: 10000 });
    const text = (await page.textContent(sel)).replace(/\s+/g, " ").trim();
    if (!text.includes(process.env.CANARY_TEXT)) fail(`canary tracker '${text}', expected '${process.env.CANARY_TEXT}'`);
    const boxes = await page.$$eval(`${sel} i`, is => is.map(i => i.className).join(","));
    if (boxes !== process.env.CANARY_BOXES) fail(`canary boxes '${boxes}', expected '${process.env.CANARY_BOXES}'`);
    console.log(`# canary tracker: ${text} [${boxes}]`);
  }

  const id = execFileSync("bash", ["-c", SUBMIT_CMD], { encoding: "utf8" }).trim();
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`submit printed '${id}', not a deployment id`);
  console.log(`# submitted ${id} (${SUBMIT_TARGET} ${SUBMIT_VERSION})`);

  // the live feed, the in-flight list and the grid cell of the target all show it
  await page.waitForSelector(`[data-testid="feed"] li[data-deployment="${id}"]`, { timeout: 30000 });
  await page.waitForSelector(`[data-testid="flights"] [data-deployment="${id}"]`, { timeout: 10000 });
  await page.waitForFunction(
    ([target, version]) => {
      const cell = document.querySelector(`[data-target="${target}"]`);
      return cell && cell.textContent.includes(version);
    },
    [SUBMIT_TARGET, SUBMIT_VERSION], { timeout: 10000 });
  const flightVersion = await page.textContent(
    `[data-testid="flights"] [data-deployment="${id}"] [data-testid="flight-version"]`);
  if (flightVersion !== SUBMIT_VERSION) fail(`in-flight version '${flightVersion}', expected '${SUBMIT_VERSION}'`);

  // without a reload: the same document, one navigation only
  const after = await page.evaluate(() => window.deployqDashboard.loadedAt);
  if (after !== loadedAt) fail("the page was reloaded");
  if (navigations !== 1) fail(`${navigations} navigations, expected 1`);
  if (errors.length) fail("errors in the page: " + errors.join(" | "));
  if (SCREENSHOT) {
    await page.waitForTimeout(1800); // let the debounced report and chart refresh land
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  }
  if (!process.exitCode) console.log("ok: the deploy appeared live, without a reload");
} catch (e) {
  fail(e && e.message ? e.message.split("\n")[0] : String(e));
  if (page) {
    // what the page showed, for the CI log
    const seen = await page.evaluate(() => ({
      connection: document.querySelector('[data-testid="connection"]').textContent,
      feed: document.getElementById("feed").innerText.split("\n").slice(0, 12),
    })).catch(() => null);
    console.error("page state: " + JSON.stringify(seen));
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => {});
  }
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
