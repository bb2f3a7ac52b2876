// What the browser scripts share: Chromium's launch, the run's watchdog, and signing in through the npm
// oidc-provider's devInteractions pages (login, then consent).
import { chromium } from 'playwright-core';

export const log = (...a) => console.log('step:', ...a);

/// Ends the run (exit 3) if it takes longer than `seconds`, whatever hangs.
export function watchdog(seconds) {
  return setTimeout(() => {
    console.log(`ERROR the browser run took longer than ${seconds} s`);
    process.exit(3);
  }, seconds * 1000);
}

/// Debian's chromium (or $CHROMIUM), headless, with what a container needs.
export function launch(step) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: step,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/// On the IdP's login interaction (where KubeHero sent `page`), signs `login` in and gives consent; resolves once
/// the browser is back on KubeHero (`kubehero`, an origin), at `back` (a predicate on the URL) when given.
export async function idpLogin(page, kubehero, login, back) {
  const isIdp = (u) => !u.startsWith(kubehero + '/');
  await page.waitForURL((u) => isIdp(u.href) && u.pathname.startsWith('/interaction/'));
  await page.waitForSelector('input[name=login]');
  const loginUrl = page.url();
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any-password');
  await Promise.all([page.waitForURL((u) => u.href !== loginUrl), page.click('button[type=submit]')]);
  const home = (u) => !isIdp(u.href) && (!back || back(u));
  if (isIdp(page.url())) {
    // The consent page (its only form submits prompt=consent).
    await page.waitForSelector('button[type=submit]');
    await Promise.all([page.waitForURL(home), page.click('button[type=submit]')]);
  }
  await page.waitForURL(home);
}
