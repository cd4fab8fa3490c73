// The demo's dashboard in headless Chromium: scripts/develop brings up the simulated rack and real
// Home Assistant on free ports; the test logs in through Home Assistant's login page, checks the
// card on mains, starts an outage with the dashboard's button, waits for the plan to shed the
// first services (never a critical one), saves a screenshot of the card, and ends the outage.
//
// Run by scripts/test (`node --test` in this folder). CHROMIUM names the browser (Debian's
// /usr/bin/chromium by default); CARD_SCREENSHOT where the screenshot goes (by default
// output/card.png here; `CARD_SCREENSHOT=docs/card.png` refreshes the README's).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const REPOSITORY = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OUTPUT = path.join(REPOSITORY, "tests/browser/output");
const SCREENSHOT = path.resolve(REPOSITORY, process.env.CARD_SCREENSHOT ?? `${OUTPUT}/card.png`);
// Generous, for a slow runner; nothing waits for a fixed time.
const DEMO_READY_MS = 420_000; // a first start builds Home Assistant's storage
const PAGE_MS = 120_000;
const CYCLES_MS = 60_000; // a few of the controller's 10 s cycles
const FIRST_SHED_MS = 300_000; // the plan sheds a couple of minutes into the outage
const STOP_MS = 120_000;
const CARD = "power-allocation-card";

/** A TCP port nothing listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The demo's services and their tiers, from the site document scripts/develop loads. */
async function demoServices() {
  const text = await readFile(path.join(REPOSITORY, "docs/demo-topology.yaml"), "utf8");
  const services = text.split(/^services:$/m)[1];
  return [...services.matchAll(/^- id: (\S+)\n\s+priority: (\S+)$/gm)].map(([, id, priority]) => ({
    id,
    priority,
  }));
}

/** scripts/develop on free ports in a new folder; resolves with its URL once it says ready. */
function startDemo(demoDir, ports) {
  const child = spawn(path.join(REPOSITORY, "scripts/develop"), [], {
    cwd: REPOSITORY,
    env: {
      ...process.env,
      DEMO_DIR: demoDir,
      HA_PORT: String(ports.ha),
      MQTT_PORT: String(ports.mqtt),
      MODBUS_PORT: "0",
      CONTROL_PORT: "0",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal)));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the demo was not ready in ${DEMO_READY_MS} ms:\n${output}`)),
      DEMO_READY_MS,
    );
    const read = (chunk) => {
      output += chunk;
      const match = /demo ready: (\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
    exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`scripts/develop ended (${how}) before it was ready:\n${output}`));
    });
  });
  return { child, ready, exited, output: () => output };
}

/** Stop the demo as Ctrl-C would, and wait until everything it started has ended. */
async function stopDemo(demo) {
  if (demo.child.exitCode !== null || demo.child.signalCode !== null) return;
  demo.child.kill("SIGTERM");
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("scripts/develop did not stop")), STOP_MS);
  });
  try {
    await Promise.race([demo.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let demo;
let demoDir;
let browser;
let page;
let services;
// What the browser complained of, for the report of a failed step.
const browserErrors = [];

before(async () => {
  services = await demoServices();
  demoDir = await mkdtemp(path.join(tmpdir(), "power-allocation-demo-"));
  demo = startDemo(demoDir, { ha: await freePort(), mqtt: await freePort() });
  const url = await demo.ready;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
  page.setDefaultTimeout(PAGE_MS);
  page.on("console", (message) => {
    if (message.type() === "error") browserErrors.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => browserErrors.push(`page: ${error}`));
  page.on("requestfailed", (request) =>
    browserErrors.push(`request: ${request.url()} ${request.failure()?.errorText}`),
  );
  page.on("response", (response) => {
    if (response.status() >= 400) browserErrors.push(`response: ${response.status()} ${response.url()}`);
  });
  await page.goto(url);
  // Home Assistant's own login page, as a newcomer sees it.
  await page.getByRole("textbox", { name: "Username" }).fill("demo");
  await page.getByRole("textbox", { name: "Password" }).fill("demo");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(/\/lovelace\//);
});

after(async () => {
  await browser?.close();
  if (demo) await stopDemo(demo);
  if (demoDir) await rm(demoDir, { recursive: true, force: true });
});

let failed = false;

/** A test step: each needs the ones before it to have passed. One that fails leaves a picture of
 * the page and says what the demo logged. */
function step(name, body) {
  test(name, async (t) => {
    if (failed) {
      t.skip("an earlier step failed");
      return;
    }
    try {
      await body();
    } catch (error) {
      failed = true;
      await mkdir(OUTPUT, { recursive: true });
      const picture = path.join(OUTPUT, `failed-${name.replaceAll(/\W+/g, "-")}.png`);
      await page?.screenshot({ path: picture, fullPage: true }).catch(() => {});
      const log = await readFile(path.join(demoDir, "home-assistant.log"), "utf8").catch(() => "");
      console.error(
        `${name}: failed; the page: ${picture} (${page?.url()})\n` +
          `the browser's errors:\n${browserErrors.join("\n")}\n` +
          `scripts/develop said:\n${demo?.output()}\n` +
          `Home Assistant's log ends:\n${log.split("\n").slice(-40).join("\n")}`,
      );
      throw error;
    }
  });
}

// Playwright's CSS selectors go through the open shadow roots of the dashboard and the card.
const header = (attributes = "") => page.locator(`${CARD} .header${attributes}`);
const tiles = (attributes = "") => page.locator(`${CARD} .tile[data-service]${attributes}`);

async function tileStates() {
  return tiles().evaluateAll((elements) =>
    Object.fromEntries(
      elements.map((tile) => [tile.dataset.service, [tile.dataset.state, tile.dataset.priority]]),
    ),
  );
}

step("on mains the card shows every service on, at its tier", async () => {
  await header('[data-on-battery="false"]').waitFor();
  await tiles().nth(services.length - 1).waitFor();
  const expected = Object.fromEntries(services.map(({ id, priority }) => [id, ["on", priority]]));
  assert.deepEqual(await tileStates(), expected);
  assert.equal(await header().getAttribute("data-mode"), "normal");
});

step("an outage from the dashboard puts the site on battery", async () => {
  await page.locator("hui-button-card", { hasText: "Start outage" }).click();
  await header('[data-on-battery="true"]').waitFor({ timeout: CYCLES_MS });
  // The UPS's first on-battery reading shows at once; the controller believes the outage on the
  // second, a cycle later (one reading might be forged or a glitch).
  await header(':not([data-mode="normal"])').waitFor({ timeout: CYCLES_MS });
  assert.notEqual(await header().getAttribute("data-mode"), "normal");
});

step("the plan sheds lower tiers first and keeps the critical services on", async () => {
  await tiles(':is([data-state="stopping"], [data-state="off"])')
    .first()
    .waitFor({ timeout: FIRST_SHED_MS });
  const states = await tileStates();
  const shed = Object.keys(states).filter((id) => ["stopping", "off"].includes(states[id][0]));
  for (const id of shed) assert.notEqual(states[id][1], "critical", `${id} was shed`);
  for (const { id, priority } of services) {
    if (priority === "critical") assert.equal(states[id][0], "on", `${id} is ${states[id][0]}`);
  }
  await page.locator(CARD).screenshot({ path: SCREENSHOT });
});

step("ending the outage from the dashboard brings the site back on mains", async () => {
  await page.locator("hui-button-card", { hasText: "End outage" }).click();
  await header('[data-on-battery="false"]').waitFor({ timeout: CYCLES_MS });
});

step("neither the page nor Home Assistant's log has an error of the integration's", async () => {
  // A request the browser aborted because the page moved on (the login's redirect) is no error.
  assert.deepEqual(
    browserErrors.filter(
      (error) => /power.allocation/i.test(error) && !/net::ERR_ABORTED$/.test(error),
    ),
    [],
  );
  const log = await readFile(path.join(demoDir, "home-assistant.log"), "utf8");
  // Its own errors, and a blocking call in the event loop that Home Assistant pins on it.
  const ours = log
    .split("\n")
    .filter((line) => /(ERROR|Detected blocking call).*power_allocation/.test(line));
  assert.deepEqual(ours, []);
});
