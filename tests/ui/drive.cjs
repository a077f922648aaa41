// Drives a running `windsock ui` in headless Chromium for tests/integration/ui.rs (and, with SCREENSHOTS set,
// takes the README's screenshots). Prints one JSON object with what it found; the Rust test
// compares it with the state database and the warehouse.
//
// Environment: PLAYWRIGHT (the playwright-core package), CHROMIUM (the browser), UI_URL, DAG,
// RUN_ID, TASK (a task of RUN_ID whose cell to click), TRIGGER_PARTITION, SCREENSHOTS (a folder).
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT);

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

async function main() {
  const base = env("UI_URL").replace(/\/$/, "");
  const dag = env("DAG");
  const runId = env("RUN_ID");
  const task = env("TASK");
  const shots = process.env.SCREENSHOTS;
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const out = {};

  // The DAGs page lists the pipelines.
  await page.goto(base + "/");
  out.dags = await page.$$eval("table.dags tr[data-dag]", (rows) => rows.map((r) => r.dataset.dag));
  if (shots) await page.screenshot({ path: `${shots}/dags.png` });

  // The grid shows the run's task states.
  await page.goto(`${base}/dags/${encodeURIComponent(dag)}`);
  out.cells = await page.$$eval("td.cell", (cells) =>
    cells.map((c) => ({ task: c.dataset.task, run: c.dataset.run, state: c.dataset.state })));
  if (shots) await page.screenshot({ path: `${shots}/grid.png` });

  // Clicking a cell opens the try, with its log.
  await page.click(`td.cell[data-task="${task}"][data-run="${runId}"] a`);
  await page.waitForSelector("#log");
  out.task_url = page.url();
  out.log = await page.textContent("#log");
  out.rendered = await page.$eval("pre.config", (p) => p.textContent).catch(() => null);

  // Trigger from the DAGs page: the new run shows up in the same page, which is never reloaded.
  await page.goto(base + "/");
  const row = `tr[data-dag="${dag}"]`;
  const before = await page.$$eval(`${row} .squares a`, (as) => as.map((a) => a.dataset.run));
  await page.evaluate(() => { window.__notReloaded = true; });
  if (process.env.TRIGGER_PARTITION) {
    await page.selectOption(`${row} form.trigger select`, process.env.TRIGGER_PARTITION);
  }
  await page.click(`${row} form.trigger button[type=submit]`);
  await page.waitForFunction(
    ([sel, n]) => document.querySelectorAll(sel).length > n,
    [`${row} .squares a`, before.length],
    { timeout: 15000 },
  );
  const after = await page.$$eval(`${row} .squares a`, (as) =>
    as.map((a) => ({ run: a.dataset.run, state: a.dataset.state })));
  out.triggered = after.filter((a) => !before.includes(a.run));
  out.not_reloaded = await page.evaluate(() => window.__notReloaded === true);
  out.flash = await page.textContent("#flash");

  // The dashboard's tiles, read from the page: each table cell's exact value.
  await page.goto(base + "/dashboard");
  out.tiles = await page.$$eval("section.tile", (tiles) =>
    Object.fromEntries(tiles.map((t) => [
      t.dataset.tile,
      {
        missing: t.querySelector(".missing") ? t.querySelector(".missing").textContent : null,
        chart: !!t.querySelector(".chart svg"),
        rows: Array.from(t.querySelectorAll("tbody tr")).map((tr) =>
          Array.from(tr.querySelectorAll("td")).map((td) => td.dataset.value)),
      },
    ])));
  if (shots) await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  await browser.close();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
