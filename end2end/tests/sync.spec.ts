// Sync: settings with the next run times, Sync now, then a run that would
// disable too many users is held and approved from its Sync runs page.

import { waitForHydration } from './fixtures/hydration';
import { modifyDirectory, saveAsLdapHa, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { BASE_URL } from './fixtures/env';
import { expect, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
  // An OU of its own, so no other spec's users are involved.
  let ldif = `dn: ou=e2esync,${d.base_dn}\nchangetype: add\nobjectClass: organizationalUnit\nou: e2esync\n\n`;
  for (const u of ['sync1', 'sync2', 'sync3']) {
    ldif += `dn: uid=${u},ou=e2esync,${d.base_dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: ${u}\ncn: ${u}\nsn: Sync\nmail: ${u}@example.com\n\n`;
  }
  modifyDirectory(d, ldif);
});
test.afterAll(() => {
  stopDirectory(d);
});

test('Sync now imports users; a held run is approved from the Sync runs page', async ({ adminPage: page }) => {
  test.slow();
  const headers = { Origin: BASE_URL };
  await saveAsLdapHa(page.request, d, BASE_URL, { search_ous: `ou=e2esync,${d.base_dn}`, attr_map: '{"username":"uid","name":"cn","email":"mail"}' });

  // Settings: an invalid crontab is refused with the reason; a valid one
  // shows the next five run times.
  await page.goto('/settings/ldap-ha');
  await waitForHydration(page, { forms: true });
  const form = page.getByRole('form', { name: 'Sync settings' });
  await form.getByRole('checkbox', { name: 'Periodic sync' }).check();
  await form.getByLabel(/^Crontab/).fill('0 25 * * *');
  await form.getByRole('button', { name: 'Save sync settings' }).click();
  await expect(form.locator('[data-field="crontab"]')).toContainText('invalid crontab');
  await form.getByLabel(/^Crontab/).fill('30 2 * * *');
  await expect(form.getByRole('checkbox', { name: /Disable users missing/ })).not.toBeChecked(); // off by default
  await form.getByLabel(/Hold a run for approval/).fill('10');
  await form.getByRole('button', { name: 'Save sync settings' }).click();
  await expect(form.getByRole('status')).toHaveText('Saved.');
  await expect(page.getByTestId('sync-schedule')).toContainText('crontab 30 2 * * * (UTC)');
  await expect(page.getByTestId('next-runs').locator('li')).toHaveCount(5);
  await expect(page.getByTestId('next-runs').locator('li').first()).toHaveText(/T02:30:00Z$/);

  // Sync now: three users created.
  await page.getByRole('form', { name: 'Sync now' }).getByRole('button', { name: 'Sync now' }).click();
  await page.getByTestId('sync-started').getByRole('link', { name: 'Follow it' }).click();
  await expect(page.getByTestId('run-state')).toHaveText('done');
  await expect(page.getByTestId('run-counts')).toContainText('create 3');
  await expect(page.getByTestId('run-items').locator('tr[data-username="sync1"]').getByTestId('item-outcome')).toHaveText('applied');

  // Disabling on (other specs' LDAP HA users are missing from this OU too:
  // they only add to the held plan). Two of three leave: over 10%, so held.
  const on = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', {
    headers,
    data: { periodic: true, crontab: '30 2 * * *', disable_missing: true, threshold_percent: 10 },
  });
  expect(on.status(), await on.text()).toBe(200);
  modifyDirectory(d, `dn: uid=sync1,ou=e2esync,${d.base_dn}\nchangetype: delete\n\ndn: uid=sync2,ou=e2esync,${d.base_dn}\nchangetype: delete\n`);
  const started = await page.request.post('/api/v1/directories/ldap_ha/sync', { headers, data: {} });
  expect(started.status(), await started.text()).toBe(202);
  const id = (await started.json()).id as number;

  await page.goto('/sync/runs');
  const row = page.getByTestId('sync-runs').locator(`tr[data-run="${id}"]`);
  await expect(row.getByTestId('run-state')).toHaveText('held');
  await row.getByRole('link', { name: `#${id}` }).click();
  await expect(page).toHaveURL(new RegExp(`/sync/runs/${id}$`));
  await expect(page.getByTestId('run-notes')).toContainText('held for approval');
  const items = page.getByTestId('run-items');
  await expect(items.locator('tr[data-username="sync1"]')).toContainText('missing from the directory');
  await expect(items.locator('tr[data-username="sync1"]').getByTestId('item-outcome')).toHaveText('planned');
  let users = await (await page.request.get('/api/v1/users?q=sync1')).json();
  expect(users.items[0].is_active, 'nothing applied while held').toBe(true);

  await waitForHydration(page, { forms: true });
  await page.getByRole('button', { name: 'Approve and apply' }).click();
  await expect(page.getByTestId('run-state')).toHaveText('done');
  await expect(items.locator('tr[data-username="sync2"]').getByTestId('item-outcome')).toHaveText('applied');
  users = await (await page.request.get('/api/v1/users?q=sync1')).json();
  expect(users.items[0].is_active).toBe(false);
  await expect(page.getByRole('link', { name: 'Download report (CSV)' })).toHaveAttribute('href', `/api/v1/sync/runs/${id}/report.csv`);
  const csv = await page.request.get(`/api/v1/sync/runs/${id}/report.csv`);
  expect(await csv.text()).toContain('disable,sync1,missing from the directory,applied,');

  // Leave nothing scheduled and no configuration behind for the other specs.
  const off = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: {} });
  expect(off.status()).toBe(200);
  const del = await page.request.delete('/api/v1/directories/ldap_ha', { headers });
  expect(del.status()).toBe(204);
});
