// Runs in the `no-js` project: sync without JavaScript — the sync settings
// form (a bad crontab named, then saved), Dry run and Sync now (the run's
// number in the answer), and a held run rejected from its page. Uses LDAP
// HA with an OU of its own in a slapd of its own.

import type { Locator, Page } from '@playwright/test';

import { BASE_URL } from './fixtures/env';
import { modifyDirectory, saveAsLdapHa, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { expect, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
  let ldif = `dn: ou=e2enojs,${d.base_dn}\nchangetype: add\nobjectClass: organizationalUnit\nou: e2enojs\n\n`;
  for (const u of ['nojs1', 'nojs2', 'nojs3']) {
    ldif += `dn: uid=${u},ou=e2enojs,${d.base_dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: ${u}\ncn: ${u}\nsn: NoJs\nmail: ${u}@example.com\n\n`;
  }
  modifyDirectory(d, ldif);
});
test.afterAll(() => {
  stopDirectory(d);
});

async function submit(page: Page, form: Locator, button: string): Promise<void> {
  const nav = page.waitForNavigation();
  await form.getByRole('button', { name: button, exact: true }).click();
  await nav;
  expect(await page.evaluate(() => document.contentType), 'a page, not JSON').toBe('text/html');
}

async function runState(page: Page, id: number, want: string): Promise<void> {
  await expect
    .poll(async () => (await (await page.request.get(`/api/v1/sync/runs/${id}`)).json()).run.state, { timeout: 30_000 })
    .toBe(want);
}

test.beforeEach(async ({ javaScriptEnabled }) => {
  expect(javaScriptEnabled, 'this file belongs to the no-js project').toBe(false);
});

test('without JavaScript: sync settings, Dry run, Sync now, and a held run rejected', async ({ adminPage: page }) => {
  test.slow();
  const headers = { Origin: BASE_URL };
  await saveAsLdapHa(page.request, d, BASE_URL, { search_ous: `ou=e2enojs,${d.base_dn}`, attr_map: '{"username":"uid","name":"cn","email":"mail"}' });
  const off = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: { disable_missing: false, threshold_percent: 10 } });
  expect(off.status(), await off.text()).toBe(200);

  await page.goto('/settings/ldap-ha');
  let form = page.getByRole('form', { name: 'Sync settings' });
  await form.getByRole('checkbox', { name: 'Periodic sync' }).check();
  await form.getByLabel(/^Crontab/).fill('0 25 * * *');
  await submit(page, form, 'Save sync settings');
  await expect(page).toHaveURL(/\/settings\/ldap-ha$/);
  await expect(page.getByTestId('flash').locator('li[data-field="crontab"]')).toContainText('invalid crontab');
  form = page.getByRole('form', { name: 'Sync settings' });
  await form.getByRole('checkbox', { name: 'Periodic sync' }).check();
  await form.getByLabel(/^Crontab/).fill('30 2 * * *');
  await submit(page, form, 'Save sync settings');
  await expect(page.getByTestId('flash')).toHaveText('Saved.');

  await submit(page, page.getByRole('form', { name: 'Dry run' }), 'Dry run');
  await expect(page.getByTestId('flash')).toContainText(/^Dry run #\d+ started/);
  const dry = Number(/#(\d+)/.exec((await page.getByTestId('flash').textContent()) ?? '')![1]);
  await runState(page, dry, 'done');

  await submit(page, page.getByRole('form', { name: 'Sync now' }), 'Sync now');
  await expect(page.getByTestId('flash')).toContainText(/^Sync run #\d+ started/);
  const run = Number(/#(\d+)/.exec((await page.getByTestId('flash').textContent()) ?? '')![1]);
  await runState(page, run, 'done');
  const users = await (await page.request.get('/api/v1/users?q=nojs&per_page=100')).json();
  expect(users.items.filter((u: { username: string }) => /^nojs\d$/.test(u.username)).length, 'the three were created').toBe(3);

  // Two of three leave with disabling on: held; rejected without JavaScript.
  const on = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', {
    headers,
    data: { periodic: true, crontab: '30 2 * * *', disable_missing: true, threshold_percent: 10 },
  });
  expect(on.status(), await on.text()).toBe(200);
  modifyDirectory(d, `dn: uid=nojs1,ou=e2enojs,${d.base_dn}\nchangetype: delete\n\ndn: uid=nojs2,ou=e2enojs,${d.base_dn}\nchangetype: delete\n`);
  const started = await page.request.post('/api/v1/directories/ldap_ha/sync', { headers, data: {} });
  expect(started.status(), await started.text()).toBe(202);
  const held = (await started.json()).id as number;
  await runState(page, held, 'held');
  await page.goto(`/sync/runs/${held}`);
  await submit(page, page.getByRole('form', { name: 'Reject' }), 'Reject');
  await expect(page).toHaveURL(new RegExp(`/sync/runs/${held}$`));
  await expect(page.getByTestId('flash')).toContainText('Rejected');
  await expect(page.getByTestId('run-state')).toHaveText('rejected');
  const after = await (await page.request.get('/api/v1/users?q=nojs1')).json();
  expect(after.items[0].is_active, 'nothing applied').toBe(true);
});
