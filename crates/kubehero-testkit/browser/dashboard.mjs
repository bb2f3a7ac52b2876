// Drives the KubeHero dashboard in headless Chromium as two people signed in through the npm oidc-provider's
// devInteractions pages: ADMIN (an admin), VIEWER (a viewer) and OWNER (an owner, who reads the audit log). Flows,
// by clicking:
//   1. the admin adds cluster CLUSTER and reads the join command (written to HANDSHAKE/join.txt for the test,
//      which starts the agent), then watches the cluster's row turn "connected" without reloading;
//   2. the viewer sees no write controls on the Clusters page and asks for member on CLUSTER;
//   3. the admin approves it on the Access page; 4. the viewer's Access page shows the role and its source;
//   5. the admin creates an API key (shown once) and revokes it; 6. drafts a policy, has a stale edit refused,
//      arms it and sees it in the history; 7. the owner filters the audit log and exports it; 8. the owner adds a
//      role binding with the editor and deletes it.
// Then every page for both: console errors, failed requests, axe-core violations; screenshots of the admin's pages
// (light and dark, 1440 and 360 px wide) into SHOTS; and a forged write from the viewer's page. Prints one
// `RESULT {json}` line; exits non-zero (with `ERROR …`) on failure.
//
// env: KUBEHERO_URL, ADMIN, VIEWER, OWNER, EXTRA (more logins whose pages are checked), CLUSTER, HANDSHAKE, SHOTS,
// ARTEFACTS, CHROMIUM.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { idpLogin, launch, log, watchdog } from './common.mjs';

const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const kubehero = process.env.KUBEHERO_URL.replace(/\/$/, '');
const cluster = process.env.CLUSTER;
const STEP = 20000;
const stopWatch = watchdog(230);
const browser = await launch(STEP);

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
  await page.goto(kubehero + '/');
  await idpLogin(page, kubehero, login);
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
let owner;
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

  // 5. An API key: shown once, then revoked.
  await admin.goto(kubehero + '/ui/credentials');
  await admin.fill('#key-name', 'ci-from-the-dashboard');
  await admin.selectOption('#key-role', 'viewer');
  await admin.click('#create-key button[type=submit]');
  const key = (await admin.textContent('#create-key-out pre[data-field="key"]')).trim();
  await admin.reload();
  const keyRow = admin.locator('#api-keys tr', { hasText: 'ci-from-the-dashboard' });
  const keyShownAgain = (await admin.content()).includes(key);
  await Promise.all([admin.waitForEvent('load'), keyRow.locator('button', { hasText: 'Revoke' }).click()]);
  const keyRevoked = (await admin.locator('#api-keys tr', { hasText: 'ci-from-the-dashboard' }).textContent()).includes('revoked');
  log('api key', key.slice(0, 4), keyRevoked);

  // 6. A policy: drafted, a stale edit refused, armed; its history shows it.
  await admin.goto(kubehero + '/ui/policies');
  await admin.fill('#draft-name', 'no-exec');
  await admin.selectOption('#draft-cluster', cluster);
  await admin.fill('#draft-spec', '{"deny": ["exec"]}');
  await Promise.all([admin.waitForEvent('load'), admin.click('#draft button[type=submit]')]);
  await Promise.all([admin.waitForEvent('load'), admin.click('#policies a:text("no-exec")')]);
  const policyUrl = admin.url();
  // Someone else saves the draft meanwhile (the same API, another tab): this page's edit is now stale.
  await admin.evaluate(async () => {
    const id = location.pathname.split('/').pop();
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    await fetch('/api/v1/policies/' + id, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ name: 'no-exec', spec: { deny: ['exec', 'attach'] }, version: 1 }),
    });
  });
  await admin.fill('#edit-spec', '{"deny": []}');
  recording = false; // the refusal (409) is the point here
  await admin.click('#edit button[type=submit]');
  await admin.waitForFunction(() => document.querySelector('#edit [data-out]').classList.contains('error'));
  const stale = await admin.textContent('#edit [data-out]');
  recording = true;
  await admin.reload();
  await Promise.all([admin.waitForEvent('load'), admin.click('#arm')]);
  const armed = (await admin.textContent('#state')).trim();
  const history = await admin.textContent('#history');
  log('policy', armed);

  // 7. An owner reads the audit log filtered to the approval, and exports it (an admin is told it is not theirs).
  owner = await signIn(process.env.OWNER);
  await owner.goto(kubehero + '/ui/audit');
  await owner.fill('#audit-filter input[name=action]', 'access.approve');
  await Promise.all([owner.waitForEvent('load'), owner.click('#audit-filter button[type=submit]')]);
  const auditRows = await owner.locator('#audit tbody tr').count();
  const [exported] = await Promise.all([owner.waitForEvent('download'), owner.click('#export')]);
  const exportFile = path.join(process.env.ARTEFACTS, 'audit-export.jsonl');
  await exported.saveAs(exportFile);
  const exportLines = fs.readFileSync(exportFile, 'utf8').split('\n').filter(Boolean);
  log('audit', auditRows, exportLines.length);

  // The live tail: the owner ticks "Live"; a request the admin makes shows up without a reload.
  await owner.goto(kubehero + '/ui/audit');
  await owner.check('#live');
  await owner.waitForTimeout(500);
  await admin.evaluate(async () => fetch('/api/v1/whoami'));
  await owner.waitForFunction(() => document.querySelector('#audit tbody').textContent.includes('whoami'), null,
    { timeout: 20000 });
  const tailed = true;
  recording = false; // closing the event stream aborts its request
  await owner.uncheck('#live');
  await owner.waitForTimeout(300);
  recording = true;
  log('live tail');

  // 8. The owner adds a role binding with the editor and deletes it again.
  await owner.goto(kubehero + '/ui/bindings');
  await owner.selectOption('#b-kind', 'group');
  await owner.fill('#b-name', 'contractors');
  await owner.selectOption('#b-role', 'viewer');
  await owner.fill('#b-cluster', cluster);
  await Promise.all([owner.waitForEvent('load'), owner.click('#add-binding button[type=submit]')]);
  const bindingRow = owner.locator('#bindings tr', { hasText: 'group contractors' });
  const bindingAdded = await bindingRow.count();
  await Promise.all([owner.waitForEvent('load'), bindingRow.locator('button', { hasText: 'Delete' }).click()]);
  const bindingLeft = await owner.locator('#bindings tr', { hasText: 'group contractors' }).count();
  log('binding', bindingAdded, bindingLeft);

  // Every page, for both people.
  const pages = [];
  const adminPages = [['home', '/'], ['clusters', '/ui/clusters'], ['cluster', `/ui/clusters/${cluster}`],
    ['access', '/ui/access'], ['policies', '/ui/policies'], ['policy', new URL(policyUrl).pathname],
    ['credentials', '/ui/credentials']];
  const screenshots = [];
  for (const [name, p] of adminPages) {
    pages.push(await check(admin, process.env.ADMIN, p));
    screenshots.push(...(await shots(admin, name)));
  }
  for (const [name, p] of [['audit', '/ui/audit'], ['bindings', '/ui/bindings'], ['people', '/ui/people'],
    ['settings', '/ui/settings']]) {
    pages.push(await check(owner, process.env.OWNER, p));
    screenshots.push(...(await shots(owner, name)));
  }
  for (const p of ['/', '/ui/clusters', `/ui/clusters/${cluster}`, '/ui/access', '/ui/policies',
    new URL(policyUrl).pathname, '/ui/audit', '/ui/credentials', '/ui/bindings', '/ui/people', '/ui/settings']) {
    pages.push(await check(viewer, process.env.VIEWER, p));
  }
  await viewer.goto(kubehero + `/ui/clusters/${cluster}`);
  // Every page as each other role too (EXTRA: more logins, e.g. an auditor and a member).
  for (const login of (process.env.EXTRA || '').split(',').filter(Boolean)) {
    const other = await signIn(login);
    for (const p of ['/', '/ui/clusters', `/ui/clusters/${cluster}`, '/ui/access', '/ui/policies',
      new URL(policyUrl).pathname, '/ui/audit', '/ui/credentials', '/ui/bindings', '/ui/people', '/ui/settings']) {
      pages.push(await check(other, login, p));
    }
    await other.context().close();
  }
  const viewerRemove = await viewer.locator('#remove').count();
  await viewer.goto(kubehero + new URL(policyUrl).pathname);
  const viewerPolicyActions = await viewer.locator('#actions').count();
  await viewer.goto(kubehero + '/ui/audit');
  const viewerAudit = { hidden: await viewer.locator('#audit-hidden').count(),
    nav: await viewer.locator('header a[href="/ui/audit"]').count() };
  await viewer.goto(kubehero + '/ui/people');
  const viewerPeople = { hidden: await viewer.locator('#hidden').count(),
    nav: await viewer.locator('header a[href="/ui/people"], header a[href="/ui/settings"]').count() };
  await viewer.goto(kubehero + '/ui/bindings');
  const viewerBindingForm = await viewer.locator('#add-binding').count();

  // A session that ends mid-form: the page sends the person to sign in and back to the same page.
  await viewer.goto(kubehero + '/ui/access');
  recording = false; // the 401 is the point here
  await viewer.context().clearCookies({ name: 'kh_session' });
  await viewer.fill('#ask-reason', 'INC-43');
  const visited = [];
  // Every navigation the browser makes (redirects included): /login must be one of them.
  const onNav = (r) => {
    if (r.isNavigationRequest()) visited.push(r.url());
  };
  viewer.on('request', onNav);
  await viewer.click('#ask button[type=submit]');
  const signedInAgain = () => visited.some((v) => v.startsWith(kubehero + '/login'));
  const deadline = Date.now() + STEP;
  while (Date.now() < deadline && !(viewer.url() === kubehero + '/ui/access' && signedInAgain())) {
    // The IdP may ask again (login, consent) before sending the person back.
    if (!viewer.url().startsWith(kubehero + '/')) {
      if (await viewer.locator('input[name=login]').count()) {
        await viewer.fill('input[name=login]', process.env.VIEWER);
        await viewer.fill('input[name=password]', 'any-password');
        await viewer.click('button[type=submit]').catch(() => {});
      } else if (await viewer.locator('button[type=submit]').count()) {
        await viewer.click('button[type=submit]').catch(() => {});
      }
    }
    await viewer.waitForTimeout(200);
  }
  viewer.off('request', onNav);
  await viewer.waitForSelector('#my-access');
  const backAfterExpiry = viewer.url() === kubehero + '/ui/access' && signedInAgain();
  recording = true;
  log('back after the session ended', backAfterExpiry);

  // A forged write from the viewer's page, and an admin's form posted by the viewer: refused.
  recording = false;
  const forged = await viewer.evaluate(async () => {
    const r = await fetch('/api/v1/clusters', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': 'forged' },
      body: JSON.stringify({ name: 'forged' }),
    });
    return r.status;
  });
  const viewerAdminPost = await viewer.evaluate(async () => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const r = await fetch('/api/v1/clusters', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ name: 'by-a-viewer' }),
    });
    return r.status;
  });

  console.log('RESULT ' + JSON.stringify({
    join_command: command, viewer_add_form: viewerAddForm, viewer_says_hidden: viewerSaysHidden, asked,
    approved_rows_left: left, granted, viewer_remove_form: viewerRemove, forged_status: forged, pages,
    key_prefix: key.slice(0, 4), key_shown_again: keyShownAgain, key_revoked: keyRevoked, stale, armed, history,
    audit_rows: auditRows, export_lines: exportLines, viewer_policy_actions: viewerPolicyActions,
    viewer_audit: viewerAudit, viewer_people: viewerPeople, viewer_binding_form: viewerBindingForm,
    binding_added: bindingAdded, binding_left: bindingLeft, tailed, back_after_expiry: backAfterExpiry,
    viewer_admin_post: viewerAdminPost,
    problems, screenshots,
  }));
} catch (e) {
  let where = '';
  for (const [name, page] of [['admin', admin], ['viewer', viewer], ['owner', owner]]) {
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
  clearTimeout(stopWatch);
}
