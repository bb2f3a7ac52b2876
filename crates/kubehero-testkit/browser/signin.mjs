// Drives the KubeHero dashboard sign-in in headless Chromium through the npm oidc-provider's devInteractions
// pages: sign in, check the landing page, reload, sign out (confirming the IdP's end-session page), and land
// on the sign-in page again. Prints one `RESULT {json}` line; exits non-zero (with `ERROR …`) on failure.
//
// env: KUBEHERO_URL, LOGIN, ARTEFACTS (directory for login.png / landing.png), CHROMIUM (executable).
import path from 'node:path';
import { launch, log, watchdog } from './common.mjs';

const kubehero = process.env.KUBEHERO_URL.replace(/\/$/, '');
const login = process.env.LOGIN;
const artefacts = process.env.ARTEFACTS;
const STEP = 15000;
const stopWatch = watchdog(55);
const browser = await launch(STEP);
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1024, height: 700 } });
  context.setDefaultTimeout(STEP);
  context.setDefaultNavigationTimeout(STEP);
  page = await context.newPage();
  page.on('console', (m) => console.log('console:', m.text()));
  const isIdp = (u) => !u.startsWith(kubehero + '/');
  const onKubehero = (p) => (u) => u.href === kubehero + p || u.href.startsWith(kubehero + p + '?');

  // 1. KubeHero `/` → /login → the IdP's login interaction.
  log('goto', kubehero + '/');
  await page.goto(kubehero + '/');
  await page.waitForURL((u) => isIdp(u.href) && u.pathname.startsWith('/interaction/'));
  await page.waitForSelector('input[name=login]');
  const loginUrl = page.url();
  log('idp login page', loginUrl);
  const loginShot = path.join(artefacts, 'login.png');
  await page.screenshot({ path: loginShot, fullPage: true });

  // 2. devInteractions login form, then the consent page.
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForURL((u) => u.href !== loginUrl), page.click('button[type=submit]')]);
  log('after login', page.url());
  if (isIdp(page.url())) {
    // The consent page (its only form submits prompt=consent).
    await page.waitForSelector('button[type=submit]');
    await Promise.all([page.waitForURL(onKubehero('/')), page.click('button[type=submit]')]);
  }
  await page.waitForURL(onKubehero('/'));
  await page.waitForSelector('#who strong');
  const who = (await page.textContent('#who strong')).trim();
  const role = (await page.textContent('#role strong')).trim();
  log('landing', page.url(), who, role);
  const landingShot = path.join(artefacts, 'landing.png');
  await page.screenshot({ path: landingShot, fullPage: true });

  // 3. Reload: the session cookie keeps us signed in.
  await page.reload();
  await page.waitForURL(onKubehero('/'));
  await page.waitForSelector('#who strong');
  const afterReloadWho = (await page.textContent('#who strong')).trim();
  log('after reload', page.url(), afterReloadWho);

  // 4. Sign out: KubeHero → the IdP's end_session confirmation → KubeHero /login → the IdP's login page.
  await Promise.all([page.waitForURL((u) => isIdp(u.href)), page.click('#logout')]);
  log('after logout click', page.url());
  if (!new URL(page.url()).pathname.startsWith('/interaction/')) {
    // oidc-provider's logoutSource: a form with a "Yes, sign me out" button (name=logout, value=yes).
    const yes = page.locator('button[name=logout][value=yes], button[autofocus], form button[type=submit]').first();
    await yes.waitFor();
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(kubehero + '/login') || new URL(u.href).pathname.startsWith('/interaction/')),
      yes.click(),
    ]);
  }
  // KubeHero's /login sends the browser straight on to the IdP's login interaction: wait until it settles there.
  await page.waitForURL((u) => isIdp(u.href) && u.pathname.startsWith('/interaction/')).catch(() => {});
  await page.waitForLoadState('load');
  const finalUrl = page.url();
  const finalHasLoginForm = (await page.locator('input[name=login]').count()) > 0;
  log('final', finalUrl, finalHasLoginForm);

  console.log('RESULT ' + JSON.stringify({
    who, role, after_reload_who: afterReloadWho, final_url: finalUrl, final_has_login_form: finalHasLoginForm,
    screenshots: [loginShot, landingShot],
  }));
} catch (e) {
  let where = '';
  try {
    where = ` (at ${page.url()}: ${(await page.content()).slice(0, 2000)})`;
    await page.screenshot({ path: path.join(artefacts, 'failure.png'), fullPage: true });
  } catch {}
  console.log('ERROR ' + String(e && e.stack || e).replace(/\n/g, ' | ') + where.replace(/\n/g, ' '));
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(stopWatch);
}
