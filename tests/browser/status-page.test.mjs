// The status page in a real browser: Debian's headless Chromium loads the page that `mlcanary
// local` serves during a real rollout (the `ui-scenario` helper starts two upstreams, `mlcanary
// local` with its own Envoy, and traffic, all on 127.0.0.1), and checks that the weight chart and
// the verdicts update as the rollout moves, that pause / resume from the page work, and that a
// rollback shows as such. Saves docs/status-page.png. Stops everything it started.
//
// Run: `npm ci && node --test` in this folder, after building `mlcanary`, `ui-scenario` and the
// filter (scripts/test.sh does all of it).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = path.join(root, "docs/status-page.png");

// How long to wait (the same as `patience` in tests/src/lib.rs). Every wait is for a condition and
// ends as soon as it holds; the bounds are only there so that a real hang fails, far above what an
// idle machine needs, because a loaded CI machine may be many times slower.
const ROLLOUT_MS = 300_000; // a rollout phase: a step reached, a rollback
const START_MS = 300_000; // ui-scenario up: it waits up to 2 × 120 s for mlcanary itself
const SETTLE_MS = 60_000; // what follows at once: a command applied, an answer on stdin/stdout
const TEST_MS = 20 * 60_000; // the whole test
const SCENARIO_MAX_S = TEST_MS / 1000 + 120; // ui-scenario's own bound outlives the test's

/** The `ui-scenario` helper as a child, spoken to one JSON line at a time. */
class Scenario {
  constructor() {
    const bin = process.env.MLCANARY_UI_SCENARIO || path.join(targetDir, "debug/ui-scenario");
    assert.ok(existsSync(bin), `${bin} is missing: cargo build -p mlcanary-e2e --bin ui-scenario`);
    const env = { ...process.env };
    env.MLCANARY_BIN ||= path.join(targetDir, "debug/mlcanary");
    const wasm = path.join(targetDir, "wasm32-wasip1/release/mlcanary_filter.wasm");
    if (!env.MLCANARY_WASM && existsSync(wasm)) env.MLCANARY_WASM = wasm;
    // Its own process group, so that a last-resort signal reaches mlcanary and Envoy too.
    this.child = spawn(bin, ["--max-seconds", String(SCENARIO_MAX_S)],
      { env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    this.stderr = "";
    this.child.stderr.on("data", (d) => { this.stderr += d; });
    this.lines = [];
    this.waiters = [];
    readline.createInterface({ input: this.child.stdout }).on("line", (l) => {
      const w = this.waiters.shift();
      if (w) w(l); else this.lines.push(l);
    });
    this.exited = new Promise((r) => this.child.on("exit", (code, signal) => r({ code, signal })));
  }

  /** The next JSON line, within `ms`. */
  next(ms) {
    const line = this.lines.length
      ? Promise.resolve(this.lines.shift())
      : new Promise((r) => this.waiters.push(r));
    let timer;
    const fail = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`ui-scenario said nothing for ${ms} ms; stderr:\n${this.stderr}`)), ms);
    });
    return Promise.race([line, fail]).finally(() => clearTimeout(timer)).then((l) => JSON.parse(l));
  }

  async send(cmd) {
    this.child.stdin.write(cmd + "\n");
    return this.next(SETTLE_MS);
  }

  /** `quit`; a process-group SIGTERM if it has not gone in SETTLE_MS. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.stdin.end("quit\n");
    const timer = setTimeout(() => {
      try { process.kill(-this.child.pid, "SIGTERM"); } catch { /* already gone */ }
    }, SETTLE_MS);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }
}

async function api(base, p, init) {
  const r = await fetch(new URL(p, base), init);
  return { status: r.status, body: await r.json() };
}

test("the status page follows a live rollout, its pause and its rollback", { timeout: TEST_MS }, async () => {
  const scenario = new Scenario();
  const profile = mkdtempSync(path.join(tmpdir(), "mlcanary-chromium-"));
  let ctx;
  try {
    const { url } = await scenario.next(START_MS);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);

    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1360, height: 900 },
      timeout: START_MS, // Chromium's start (Playwright's default is 30 s)
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(SETTLE_MS); // navigation and every locator action
    const offsite = [];
    page.on("request", (r) => { if (!r.url().startsWith(url)) offsite.push(r.url()); });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));

    await page.goto(url);
    // Marks this document: it must survive every update (no reload).
    await page.evaluate(() => { window.__sameDocument = true; });
    // Only now the traffic: until then the rollout holds at its first step, so however long the
    // browser took to start, it sees the rollout move from the beginning.
    assert.deepEqual(await scenario.send("traffic"), { ok: "traffic" });
    const policy = page.locator('section[data-policy="fraud-model"]');
    const chart = policy.locator('[data-testid="weight-chart"]');
    const phase = policy.locator('[data-testid="phase"]');

    // 1. The rollout moves: the chart gains points and a higher weight, verdicts show numbers.
    await page.waitForFunction(() => {
      const c = document.querySelector('section[data-policy="fraud-model"] [data-testid="weight-chart"]');
      const v = document.querySelector('section[data-policy="fraud-model"] tr[data-check="errors"]');
      return c && +c.dataset.points >= 3 && +c.dataset.lastBp >= 1000 && v?.dataset.verdict === "pass";
    }, null, { timeout: ROLLOUT_MS });
    const bp1 = +(await chart.getAttribute("data-last-bp"));
    const step1 = await policy.locator('[data-testid="step"]').innerText();
    const row = policy.locator('tr[data-check="errors"]');
    assert.match(await row.innerText(), /pass/);
    assert.match(await row.locator("td").nth(4).innerText(), /0\.01/, "the threshold is shown");
    assert.match(await row.locator("td").nth(5).innerText(), /^\[[\d.]+, 0\.\d+\]$/, "its interval too");
    await page.waitForFunction((bp) => +document.querySelector(
      'section[data-policy="fraud-model"] [data-testid="weight-chart"]').dataset.lastBp > bp, bp1, { timeout: ROLLOUT_MS });
    assert.notEqual(await policy.locator('[data-testid="step"]').innerText(), step1, "the step moved on");
    assert.equal(await phase.innerText(), "Progressing");
    // Error rate and latency compare two values; drift is one number (PSI of canary vs stable).
    for (const [check, lines] of [["errors", ["canary", "stable", "limit"]],
      ["latency-p99", ["canary", "stable", "limit"]], ["score-drift", ["canary", "limit"]]]) {
      const fig = policy.locator(`figure[data-check="${check}"]`);
      assert.ok(+(await fig.getAttribute("data-points")) >= 2, `${check} chart has a series`);
      for (const l of lines) {
        assert.ok((await fig.locator(`path.l-${l}`).getAttribute("d")).length > 10, `${check}: ${l} line`);
      }
    }

    // 2. Pause from the page holds the weight; resume lets it go on.
    await page.waitForFunction(() => +document.querySelector(
      'section[data-policy="fraud-model"] [data-testid="weight-chart"]').dataset.lastBp >= 3000, null, { timeout: ROLLOUT_MS });
    await policy.locator('button[data-command="pause"]').click();
    await page.waitForFunction(() => document.querySelector(
      'section[data-policy="fraud-model"] [data-testid="phase"]')?.innerText === "Paused", null, { timeout: SETTLE_MS });
    assert.equal(await policy.locator('[data-kind="paused"]').count(), 1);
    const held = await api(url, "/api/policies/fraud-model");
    await new Promise((r) => setTimeout(r, 2500)); // nothing may change while paused, however slow
    const still = await api(url, "/api/policies/fraud-model");
    assert.equal(still.body.phase, "Paused");
    assert.equal(still.body.canaryWeightBp, held.body.canaryWeightBp, "paused: the weight holds");
    await policy.locator('button[data-command="resume"]').click();
    await page.waitForFunction(() => document.querySelector(
      'section[data-policy="fraud-model"] [data-testid="phase"]')?.innerText === "Progressing", null, { timeout: SETTLE_MS });
    assert.equal(await policy.locator('[data-kind="resumed"]').count(), 1);
    await page.waitForFunction((bp) => +document.querySelector(
      'section[data-policy="fraud-model"] [data-testid="weight-chart"]').dataset.lastBp > bp,
    held.body.canaryWeightBp, { timeout: ROLLOUT_MS });

    // 3. The canary breaks: the page shows the rollback, the failing verdict and the reason.
    assert.deepEqual(await scenario.send("fail"), { ok: "fail" });
    await page.waitForFunction(() => document.querySelector(
      'section[data-policy="fraud-model"] [data-testid="phase"]')?.innerText === "RolledBack", null, { timeout: ROLLOUT_MS });
    await page.waitForTimeout(1200); // one more poll, so the screenshot has the final state
    assert.equal(await chart.getAttribute("data-last-bp"), "0");
    const marker = chart.locator('[data-kind="rolledBack"]');
    assert.equal(await marker.count(), 1, "one rollback marker on the weight chart");
    assert.match(await marker.innerHTML(), /rolled back/);
    assert.equal(await row.getAttribute("data-verdict"), "fail");
    assert.ok(await policy.locator('figure[data-check="errors"] circle.dot-fail').count() >= 1, "failing points marked");
    assert.match(await policy.locator('[data-testid="history"]').innerText(), /consecutive failed analyses/);
    assert.equal(await policy.locator('button[data-command="abort"]').isDisabled(), true, "ended: no more commands");
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "updated without a reload");
    assert.match(await page.locator('[data-testid="conn"]').innerText(), /live/);

    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    // 4. The JSON API the page (and the CLI) read.
    const list = await api(url, "/api/policies");
    assert.equal(list.status, 200);
    assert.deepEqual(Object.keys(list.body[0]).sort(), ["canaryVersion", "canaryWeightBp", "conditions", "failedChecks",
      "failureThreshold", "history", "lastVerdicts", "name", "namespace", "phase", "shadowMirrorBp", "stepIndex",
      "stepsBp", "updated"]);
    assert.equal(list.body[0].phase, "RolledBack");
    const one = await api(url, "/api/policies/fraud-model");
    assert.ok(one.body.series.weight.length >= 5);
    assert.deepEqual(Object.keys(one.body.series.checks).sort(), ["errors", "latency-p99", "score-drift"]);
    const kinds = one.body.series.events.map((e) => e.kind);
    for (const k of ["started", "advanced", "paused", "resumed", "analysisFailed", "rolledBack"]) {
      assert.ok(kinds.includes(k), `event ${k} in ${kinds}`);
    }
    assert.equal((await api(url, "/api/policies/nope")).status, 404);
    const late = await api(url, "/api/policies/fraud-model/promote", { method: "POST" });
    assert.equal(late.status, 409, "a rolled-back rollout takes no promote");
    assert.match(late.body.error, /RolledBack/);

    assert.deepEqual(offsite, [], "the page loads nothing from elsewhere");
    assert.deepEqual(errors, [], "no script errors");
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    const exit = await scenario.stop();
    rmSync(profile, { recursive: true, force: true });
    assert.equal(exit.code, 0, `ui-scenario exit ${JSON.stringify(exit)}; stderr:\n${scenario.stderr}`);
  }
});
