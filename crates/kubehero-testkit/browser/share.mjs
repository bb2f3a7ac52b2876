// Opens a KubeHero share link in headless Chromium as a person who is not signed in: the link sends the
// browser through the npm oidc-provider's devInteractions login (and consent) and back to the link; then
// reads what the page says the link gives, accepts it and downloads the kubeconfig. When the page refuses
// the link, reports why instead. Prints one `RESULT {json}` line; exits non-zero (with `ERROR …`) on failure.
//
// env: LINK, LOGIN, ARTEFACTS (directory for share-<login>.png and the download), CHROMIUM (executable).
import fs from 'node:fs';
import path from 'node:path';
import { idpLogin, launch, log, watchdog } from './common.mjs';

const link = process.env.LINK;
const login = process.env.LOGIN;
const artefacts = process.env.ARTEFACTS;
const kubehero = new URL(link).origin;
const STEP = 15000;
const stopWatch = watchdog(55);
const browser = await launch(STEP);
let page;
const text = async (sel) => ((await page.locator(sel).count()) ? (await page.textContent(sel)).trim() : null);
try {
  // The control plane under test serves a self-signed certificate.
  const context = await browser.newContext({
    viewport: { width: 1024, height: 700 }, acceptDownloads: true, ignoreHTTPSErrors: true,
  });
  context.setDefaultTimeout(STEP);
  context.setDefaultNavigationTimeout(STEP);
  page = await context.newPage();
  // 1. The link → KubeHero /login → the IdP's login and consent → back at the link (the sign-in's return path).
  log('goto', link);
  await page.goto(link);
  await idpLogin(page, kubehero, login, (u) => u.href === link);
  await page.waitForLoadState('load');
  log('back at the link', page.url());
  const shot = path.join(artefacts, `share-${login}.png`);
  await page.screenshot({ path: shot, fullPage: true });

  // 3. Refused: say why.
  if (await page.locator('#refused').count()) {
    const reason = await page.getAttribute('#refused', 'data-reason');
    console.log('RESULT ' + JSON.stringify({ refused: reason, message: await text('#refused'), screenshot: shot }));
  } else {
    const shown = {
      cluster: await text('#cluster'), role: await text('#role'), scope: await text('#scope'),
      expires: await text('#expires'), shared_by: await text('#shared-by'), cli: await text('#cli'),
    };
    log('shown', JSON.stringify(shown));
    // 4. Accept, then download the kubeconfig.
    await Promise.all([page.waitForSelector('#granted'), page.click('#accept')]);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const file = path.join(artefacts, `kubeconfig-${login}.yaml`);
    await download.saveAs(file);
    const kubeconfig = fs.readFileSync(file, 'utf8');
    console.log('RESULT ' + JSON.stringify({ refused: null, shown, kubeconfig, screenshot: shot }));
  }
} catch (e) {
  let where = '';
  try {
    where = ` (at ${page.url()}: ${(await page.content()).slice(0, 2000)})`;
    await page.screenshot({ path: path.join(artefacts, `share-failure-${login}.png`), fullPage: true });
  } catch {}
  console.log('ERROR ' + String(e && e.stack || e).replace(/\n/g, ' | ') + where.replace(/\n/g, ' '));
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(stopWatch);
}
