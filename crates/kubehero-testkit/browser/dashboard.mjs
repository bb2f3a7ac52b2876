// Drives the KubeHero dashboard in headless Chromium as two people signed in through the npm oidc-provider's
// devInteractions pages: ADMIN (an admin) and VIEWER (a viewer). Flows, by clicking:
//   1. the admin adds cluster CLUSTER and reads the join command (written to HANDSHAKE/join.txt for the test,
//      which starts the agent), then watches the cluster's row turn "connected" without reloading;
//   2. the viewer sees no write controls on the Clusters page and asks for member on CLUSTER;
//   3. the admin approves it on the Access page; 4. the viewer's Access page shows the role and its source.
// Then every page for both: console errors, failed requests, axe-core violations; screenshots of the admin's pages
// (light and dark, 1440 and 360 px wide) into SHOTS; and a forged write from the viewer's page. Prints one
// `RESULT {json}` line; exits non-zero (with `ERROR …`) on failure.
//
// env: KUBEHERO_URL, ADMIN, VIEWER, CLUSTER, HANDSHAKE, SHOTS, ARTEFACTS, CHROMIUM.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const kubehero = process.env.KUBEHERO_URL.replace(/\/$/, '');
const cluster = process.env.CLUSTER;
const STEP = 20000;
const log = (...a) => console.log('step:', ...a);

const watchdog = setTimeout(() => {
  console.log('ERROR the browser run took longer than 170 s');
  process.exit(3);
}, 170000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: STEP,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

// Console errors and failed requests per person, with the page they happened on (until the forged write, whose
// refusal the browser reports as an error).
const problems = [];
let recording = true;

async function signIn(login) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, ignoreHTTPSErrors: true });
  context.setDefaultTimeout(STEP);
  context.setDefaultNavigationTimeout(STEP);
  const page = await context.newPage();
  page.on('console', (m) => {
    if (recording && m.type() === 'error') problems.push({ login, url: page.url(), console: m.text() });
  });
  page.on('requestfailed', (r) => {
    if (recording) problems.push({ login, url: r.url(), failed: r.failure()?.errorText });
  });
  page.on('response', (r) => {
    if (recording && r.status() >= 400) problems.push({ login, url: r.url(), status: r.status() });
  });
  const isIdp = (u) => !u.startsWith(kubehero + '/');
  await page.goto(kubehero + '/');
  await page.waitForURL((u) => isIdp(u.href) && u.pathname.startsWith('/interaction/'));
  const loginUrl = page.url();
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForURL((u) => u.href !== loginUrl), page.click('button[type=submit]')]);
  if (isIdp(page.url())) {
    await page.waitForSelector('button[type=submit]');
    await Promise.all([page.waitForURL((u) => !isIdp(u.href)), page.click('button[type=submit]')]);
  }
  await page.waitForSelector('#who strong');
  log('signed in', login);
  return page;
}

async function check(page, login, p) {
  await page.goto(kubehero + p);
  await page.waitForLoadState('load');
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  });
  log('checked', login, p, JSON.stringify(violations));
  return { login, path: p, violations };
}

async function shots(page, name) {
  const out = [];
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    for (const [width, height] of [[1440, 900], [360, 740]]) {
      await page.setViewportSize({ width, height });
      const file = path.join(process.env.SHOTS, `${name}-${colorScheme}-${width}.png`);
      await page.screenshot({ path: file, fullPage: true });
      out.push(file);
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 1440, height: 900 });
  return out;
}

let admin;
let viewer;
try {
  fs.mkdirSync(process.env.SHOTS, { recursive: true });
  admin = await signIn(process.env.ADMIN);
  viewer = await signIn(process.env.VIEWER);

  // 1. The admin adds the cluster; the join command is shown once; the row turns connected by itself.
  await admin.goto(kubehero + '/ui/clusters');
  await admin.fill('#add-name', cluster);
  await admin.click('#add-cluster button[type=submit]');
  const command = (await admin.textContent('#add-out pre[data-field="join.agent_command"]', { timeout: STEP })).trim();
  fs.writeFileSync(path.join(process.env.HANDSHAKE, 'join.txt'), command);
  log('join command shown');
  await admin.goto(kubehero + '/ui/clusters');
  const state = `tr[data-cluster="${cluster}"] [data-field="state"]`;
  await admin.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'connected', state, { timeout: 60000 });
  log('row shows connected');

  // 2. The viewer: no write controls; asks for member on the new cluster.
  await viewer.goto(kubehero + '/ui/clusters');
  const viewerAddForm = await viewer.locator('#add-cluster').count();
  const viewerSaysHidden = await viewer.locator('#add-hidden').count();
  await viewer.goto(kubehero + '/ui/access');
  await viewer.selectOption('#ask-cluster', cluster);
  await viewer.selectOption('#ask-role', 'member');
  await viewer.fill('#ask-reason', 'INC-42');
  await Promise.all([viewer.waitForEvent('load'), viewer.click('#ask button[type=submit]')]);
  const asked = (await viewer.textContent('#my-requests')).includes('pending');
  log('asked', asked);

  // 3. The admin approves it from the Access page.
  await admin.goto(kubehero + '/ui/access');
  const row = admin.locator('#to-decide tr[data-request]').first();
  await row.locator('input[name=comment]').fill('ok for INC-42');
  await Promise.all([admin.waitForEvent('load'), row.locator('button', { hasText: 'Approve' }).click()]);
  const left = await admin.locator('#to-decide tr[data-request]').count();
  log('approved; rows left', left);

  // 4. The viewer's Access page shows the role and where it comes from.
  await viewer.goto(kubehero + '/ui/access');
  const mine = await viewer.textContent('#my-access');
  const granted = mine.includes('member') && mine.includes('elevation') && mine.includes(cluster);

  // Every page, for both people.
  const pages = [];
  const adminPages = [['home', '/'], ['clusters', '/ui/clusters'], ['cluster', `/ui/clusters/${cluster}`],
    ['access', '/ui/access']];
  const screenshots = [];
  for (const [name, p] of adminPages) {
    pages.push(await check(admin, process.env.ADMIN, p));
    screenshots.push(...(await shots(admin, name)));
  }
  for (const p of ['/', '/ui/clusters', `/ui/clusters/${cluster}`, '/ui/access']) {
    pages.push(await check(viewer, process.env.VIEWER, p));
  }
  const viewerRemove = await viewer.locator('#remove').count();

  // A forged write from the viewer's page: refused.
  recording = false;
  const forged = await viewer.evaluate(async () => {
    const r = await fetch('/api/v1/clusters', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': 'forged' },
      body: JSON.stringify({ name: 'forged' }),
    });
    return r.status;
  });

  console.log('RESULT ' + JSON.stringify({
    join_command: command, viewer_add_form: viewerAddForm, viewer_says_hidden: viewerSaysHidden, asked,
    approved_rows_left: left, granted, viewer_remove_form: viewerRemove, forged_status: forged, pages,
    problems, screenshots,
  }));
} catch (e) {
  let where = '';
  for (const [name, page] of [['admin', admin], ['viewer', viewer]]) {
    if (!page) continue;
    try {
      where += ` (${name} at ${page.url()}: ${(await page.content()).slice(0, 1500)})`;
      await page.screenshot({ path: path.join(process.env.ARTEFACTS, `dashboard-failure-${name}.png`), fullPage: true });
    } catch {}
  }
  console.log('ERROR ' + String(e && e.stack || e).replace(/\n/g, ' | ') + where.replace(/\n/g, ' '));
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
