// The dashboard end to end, in Debian's chromium driven by playwright-core (run by
// tests/dashboard.rs): log in with a join token, create a container and a VM from the
// form, see them running with their process trees and graphs, type into the VM's console
// and read its answer, stop both. Screenshots go to BERTH_SCREENSHOTS.
//
// Environment: BERTH_URL (https://127.0.0.1:PORT), BERTH_TOKEN, BERTH_SCREENSHOTS,
// BERTH_CHROMIUM (default /usr/bin/chromium). Prints one line per step; exits 1 with the
// reason on the first failure.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, request } from "playwright-core";

const url = process.env.BERTH_URL;
const token = process.env.BERTH_TOKEN;
const shots = process.env.BERTH_SCREENSHOTS;
const executablePath = process.env.BERTH_CHROMIUM || "/usr/bin/chromium";
if (!url || !token || !shots) {
  console.error("BERTH_URL, BERTH_TOKEN and BERTH_SCREENSHOTS must be set");
  process.exit(2);
}

const step = (what) => console.log(`step: ${what}`);
const profile = mkdtempSync(join(tmpdir(), "berth-chromium-"));

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  ignoreHTTPSErrors: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error") console.log(`browser console: ${message.text()}`);
});

async function shot(name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

function row(name) {
  return page.locator(`#instances tbody tr[data-name="${name}"]`);
}

async function waitForState(name, wanted, timeout) {
  await page.locator(`#instances tbody tr[data-name="${name}"] td.state`).filter({ hasText: new RegExp(`^${wanted}$`) })
    .waitFor({ timeout });
}

async function create({ kind, name, command, memory, interactive }) {
  await page.click('header nav button[data-view="create"]');
  await page.check(`#create-form input[name="kind"][value="${kind}"]`);
  await page.fill("#create-name", name);
  await page.selectOption("#create-image", "busybox");
  await page.fill("#create-command", command);
  await page.fill("#create-memory", memory);
  if (interactive) await page.check("#create-interactive");
  else await page.uncheck("#create-interactive");
  await page.click("#create-button");
}

try {
  step("the page asks for a token");
  await page.goto(`${url}/`);
  await page.locator("#login-form").waitFor({ state: "visible", timeout: 15000 });
  await shot("01-login");

  step("a wrong token is refused with the server's message");
  await page.fill("#token", "not-a-token");
  await page.click("#login-button");
  await page.locator("#login-error").filter({ hasText: /token/ }).waitFor({ timeout: 10000 });

  step("log in with the join token");
  await page.fill("#token", token);
  await page.click("#login-button");
  await page.locator("#app").waitFor({ state: "visible", timeout: 15000 });
  const who = await page.textContent("#who");
  if (who !== "browser") throw new Error(`logged in as '${who}', wanted 'browser'`);

  step("the session's cookie alone does not change anything (no cross-site requests)");
  const forged = await page.request.post(`${url}/v1/instances/nothing/stop`);
  if (forged.status() !== 403 || !(await forged.text()).includes("x-berth-dashboard")) {
    throw new Error(`a POST without the dashboard header got ${forged.status()}`);
  }
  const stranger = await request.newContext({ ignoreHTTPSErrors: true });
  const anonymous = await stranger.get(`${url}/v1/instances`, { headers: { cookie: "berth_session=forged" } });
  await stranger.dispose();
  if (anonymous.status() !== 403) throw new Error(`a forged session got ${anonymous.status()}`);

  step("create a container from the form");
  await create({ kind: "container", name: "dash-web", command: "sh -c 'while true; do echo tick; sleep 1; done'", memory: "128m" });
  await waitForState("dash-web", "running", 60000);
  await page.locator("#detail-name").filter({ hasText: "dash-web" }).waitFor({ timeout: 10000 });

  step("its process tree shows the shell and its sleep");
  await page.locator("#tab-processes").filter({ hasText: "while true" }).waitFor({ timeout: 20000 });
  await page.locator("#tab-processes").filter({ hasText: "sleep 1" }).waitFor({ timeout: 20000 });

  step("its graphs fill in");
  await page.locator("#mem-now").filter({ hasText: "of 128 MiB" }).waitFor({ timeout: 20000 });
  await page.locator("#cpu-now").filter({ hasText: "%" }).waitFor({ timeout: 20000 });
  await shot("02-container");

  step("its log streams live");
  await page.click('.tabs button[data-tab="logs"]');
  await page.waitForFunction(() => (document.querySelector("#tab-logs").textContent.match(/tick/g) || []).length >= 3, null, { timeout: 20000 });

  step("a shell in the container answers");
  await page.click('.tabs button[data-tab="shell"]');
  await page.locator("#terminal .xterm-rows").filter({ hasText: "#" }).waitFor({ timeout: 20000 });
  await page.locator("#terminal .xterm-helper-textarea").focus();
  await page.keyboard.type("echo shell-$((20+22))\n");
  await page.locator("#terminal .xterm-rows").filter({ hasText: "shell-42" }).waitFor({ timeout: 20000 });
  await shot("03-container-shell");

  step("create a VM from the form (TCG here: it takes longer)");
  await create({ kind: "vm", name: "dash-vm", command: "sh", memory: "256m", interactive: true });
  await waitForState("dash-vm", "running", 180000);
  await page.locator("#detail-name").filter({ hasText: "dash-vm" }).waitFor({ timeout: 10000 });

  step("its process tree is the supervisor and qemu");
  await page.click('.tabs button[data-tab="processes"]');
  await page.locator("#tab-processes").filter({ hasText: "qemu-system-x86_64" }).waitFor({ timeout: 30000 });
  await shot("04-vm");

  step("type into the VM's console and read its answer");
  await page.click('.tabs button[data-tab="console"]');
  await page.locator("#terminal .xterm-rows").waitFor({ timeout: 15000 });
  const deadline = Date.now() + 120000;
  let answered = false;
  while (!answered && Date.now() < deadline) {
    await page.locator("#terminal .xterm-helper-textarea").focus();
    await page.keyboard.type("echo console-$((6*7))\n");
    answered = await page.locator("#terminal .xterm-rows").filter({ hasText: "console-42" })
      .waitFor({ timeout: 10000 }).then(() => true, () => false);
  }
  if (!answered) throw new Error("the VM's console never answered console-42");
  await shot("05-vm-console");

  step("both appear on the nodes view's node");
  await page.click('header nav button[data-view="nodes"]');
  await page.locator("#nodes tbody tr").first().waitFor({ timeout: 10000 });
  await shot("06-nodes");
  await page.click('header nav button[data-view="instances"]');

  for (const name of ["dash-vm", "dash-web"]) {
    step(`stop ${name}`);
    await row(name).locator("a.instance-link").click();
    await page.locator("#detail-name").filter({ hasText: name }).waitFor({ timeout: 10000 });
    await page.click('#detail-actions button[data-action="stop"]');
    await waitForState(name, "exited", 60000);
  }

  step("the events view saw the creates, starts and stops");
  await page.click('header nav button[data-view="events"]');
  await page.locator("#events li").filter({ hasText: "dash-vm: die" }).first().waitFor({ timeout: 20000 });
  await shot("07-events");
  await page.click('header nav button[data-view="instances"]');
  await shot("08-stopped");

  if (problems.length) throw new Error(problems.join("; "));
  step("log out");
  await page.click("#logout");
  await page.locator("#login-form").waitFor({ state: "visible", timeout: 15000 });
  console.log("dashboard: all steps passed");
} catch (error) {
  console.error(`dashboard: FAILED: ${error.message}`);
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
