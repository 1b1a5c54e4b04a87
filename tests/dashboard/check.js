// Drives governor's dashboard in Debian's Chromium through Playwright, for
// tests/tests/dashboard.rs.
//
// usage: node check.js BASE_URL TOKEN AGENT SCREENSHOT USER_DATA_DIR
//
// Logs in with /?token=, waits for AGENT's denial of /etc/shadow and for the timeline, clicks
// AGENT's suspend button, tries a resume without the CSRF header, saves a screenshot, and
// prints one JSON object with what it saw; the Rust test checks it against the kernel.
"use strict";

const { chromium } = require("playwright-core");

async function main() {
  const [base, token, agent, screenshot, userDataDir] = process.argv.slice(2);
  const seen = {};
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.GOVERNOR_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: 1400, height: 1100 },
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const failures = [];
    page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") failures.push(`console: ${message.text()}`);
    });
    // Any request that leaves the daemon's origin is a failure of "no network at run time".
    const origin = new URL(base).origin;
    const elsewhere = [];
    page.on("request", (request) => {
      if (!request.url().startsWith(origin)) elsewhere.push(request.url());
    });

    const landing = await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
    seen.landing_status = landing.status();
    seen.url_after_login = page.url();
    const cookies = await context.cookies();
    seen.cookie = cookies
      .filter((cookie) => cookie.name === "governor_session")
      .map((cookie) => ({ httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path }))[0] || null;

    // The agent's real denial, in the recent events (from the store and the live stream).
    const denial = page.locator("#events tbody tr.deny", { hasText: "/etc/shadow" }).filter({ hasText: agent });
    await denial.first().waitFor({ timeout: 20000 });
    seen.denial_row = (await denial.first().innerText()).split("\t");
    await page.locator("#stream[data-state=open]").waitFor({ timeout: 20000 });
    seen.stream = await page.locator("#stream").innerText();

    // The timeline: bars for the hour, with the denial among them.
    await page.waitForFunction(() => document.querySelectorAll("#timeline rect.deny").length > 0, null, { timeout: 20000 });
    seen.timeline = await page.evaluate(() => {
      const svg = document.getElementById("timeline");
      const box = svg.getBoundingClientRect();
      return {
        rects: svg.querySelectorAll("rect").length,
        deny_rects: svg.querySelectorAll("rect.deny").length,
        allow: Number(svg.dataset.allow),
        deny: Number(svg.dataset.deny),
        width: box.width,
        height: box.height,
      };
    });
    await page.waitForFunction(() => document.getElementById("card-agents").textContent !== "–", null, { timeout: 20000 });
    seen.cards = await page.evaluate(() =>
      Object.fromEntries(
        ["agents", "agents-detail", "events", "allow", "deny", "incidents", "score", "latency"].map((name) => [
          name,
          document.getElementById(`card-${name}`).textContent,
        ]),
      ),
    );

    // Suspend through the page.
    const row = page.locator(`#agents tr[data-agent="${agent}"]`);
    await row.waitFor({ timeout: 20000 });
    seen.state_before = await row.getAttribute("data-state");
    await row.locator("button[data-action=suspend]").click();
    await page.locator("#action-result", { hasText: `${agent}: suspended` }).waitFor({ timeout: 20000 });
    seen.action_result = await page.locator("#action-result").innerText();
    await page.locator(`#agents tr[data-agent="${agent}"][data-state=suspended]`).waitFor({ timeout: 20000 });
    seen.state_after = "suspended";

    // What went wrong so far (the refusal below is meant to log a 403).
    seen.failures = failures.slice();
    // A request with the cookie but without the CSRF header is refused by the server.
    seen.without_csrf = await page.evaluate(async (id) => {
      const response = await fetch(`/api/v1/agents/${id}/resume`, { method: "POST", credentials: "same-origin" });
      return { status: response.status, body: await response.json() };
    }, agent);

    await page.screenshot({ path: screenshot, fullPage: true });
    seen.screenshot = screenshot;
    seen.elsewhere = elsewhere;
  } finally {
    await context.close();
  }
  process.stdout.write(`${JSON.stringify(seen)}\n`);
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ error: String(error && error.stack ? error.stack : error) })}\n`);
  process.exit(1);
});
