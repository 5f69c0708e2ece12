// Dashboard timings in Debian's chromium (run by bench/dashboard.sh): first paint and the
// time until the instance table is filled, on a fresh page load with a logged-in session;
// then how long a state change made through the CLI takes to appear in the open page.
// Environment: BERTH_URL, BERTH_TOKEN, BERTH (the CLI), BERTH_HOST, RUNS, COUNT.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.BERTH_URL;
const runs = Number(process.env.RUNS || 20);
const count = Number(process.env.COUNT || 50);
const berth = process.env.BERTH;
const profile = mkdtempSync(join(tmpdir(), "berth-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BERTH_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  ignoreHTTPSErrors: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run"],
});
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const report = (what, values) =>
  console.log(JSON.stringify({ what, median_ms: +median(values).toFixed(1), min_ms: +Math.min(...values).toFixed(1), runs: values.length }));

try {
  const login = context.pages()[0] ?? (await context.newPage());
  await login.goto(`${url}/ui/`);
  await login.fill("#token", process.env.BERTH_TOKEN);
  await login.click("#login-button");
  await login.locator("#app").waitFor({ state: "visible" });
  await login.close();

  const paints = [];
  const tables = [];
  for (let i = 0; i < runs + 2; i += 1) {
    const page = await context.newPage();
    await page.goto(`${url}/ui/`, { waitUntil: "commit" });
    await page.waitForFunction((n) => document.querySelectorAll("#instances tbody tr").length >= n, count, { polling: "raf", timeout: 10000 })
      .catch(async (e) => { throw new Error(`${e.message}; rows: ${await page.locator("#instances tbody tr").count()}; flash: ${await page.textContent("#flash")}; login shown: ${await page.isVisible("#login")}`); });
    const table = await page.evaluate(() => performance.now());
    // The paint entry is recorded once the frame is on screen, after the table was filled.
    const paint = await page.evaluate(() => new Promise((resolve) => {
      new PerformanceObserver((list) => {
        const entry = list.getEntriesByName("first-contentful-paint")[0];
        if (entry) resolve(entry.startTime);
      }).observe({ type: "paint", buffered: true });
    }));
    if (i >= 2) {
      paints.push(paint);
      tables.push(table);
    }
    await page.close();
  }
  report("first contentful paint", paints);
  report(`instance table filled (${count} rows)`, tables);

  const page = await context.newPage();
  await page.goto(`${url}/ui/`);
  await page.waitForFunction((n) => document.querySelectorAll("#instances tbody tr").length >= n, count);
  const afterReturn = [];
  const whole = [];
  for (let i = 0; i < runs; i += 1) {
    const name = `idle${(i % count) + 1}`;
    for (const [action, shown] of [["pause", "paused"], ["unpause", "running"]]) {
      const start = performance.now();
      execFileSync(berth, [action, name], { stdio: "ignore" });
      const returned = performance.now();
      await page.waitForFunction(([n, s]) => {
        const cell = document.querySelector(`#instances tbody tr[data-name="${n}"] td.state`);
        return cell && cell.textContent === s;
      }, [name, shown], { polling: "raf" });
      const seen = performance.now();
      afterReturn.push(seen - returned);
      whole.push(seen - start);
    }
  }
  report("state change seen after the CLI returned", afterReturn);
  report("state change: CLI call until seen in the page", whole);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
