// Delta sync (issue 17): Test connection detects syncrepl on the test kit's
// slapd (syncprov), Sync settings show the detected method and offer Delta;
// in delta mode the first run is a full one that records the cookies, the
// next reads only what changed and is listed as a delta run.

import { LdapPage } from './fixtures/ldap-page';
import { waitForHydration } from './fixtures/hydration';
import { modifyDirectory, saveAsLdapHa, startDirectory, stopDirectory, type Directory } from './fixtures/slapd';
import { BASE_URL } from './fixtures/env';
import { expect, test } from './fixtures/test';

let d: Directory;
test.beforeAll(() => {
  d = startDirectory();
  let ldif = `dn: ou=e2edelta,${d.base_dn}\nchangetype: add\nobjectClass: organizationalUnit\nou: e2edelta\n\n`;
  for (const u of ['delta1', 'delta2']) {
    ldif += `dn: uid=${u},ou=e2edelta,${d.base_dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: ${u}\ncn: ${u}\nsn: Delta\nmail: ${u}@example.com\n\n`;
  }
  modifyDirectory(d, ldif);
});
test.afterAll(() => {
  stopDirectory(d);
});

test('Sync settings show the delta method Test connection detected, and delta runs are listed', async ({ adminPage: page }) => {
  test.slow();
  const headers = { Origin: BASE_URL };
  await saveAsLdapHa(page.request, d, BASE_URL, { search_ous: `ou=e2edelta,${d.base_dn}`, attr_map: '{"username":"uid","name":"cn","email":"mail"}' });

  const ldap = new LdapPage(page, 'ldap-ha');
  await ldap.goto();
  const card = page.getByRole('form', { name: 'Sync settings' });
  await expect(card.getByTestId('delta-detected')).toContainText('No delta method detected yet');
  await expect(card.locator('select[name="mode"] option[value="delta"]')).toHaveCount(0);

  await ldap.testConnection();
  await expect(ldap.probeReport.getByTestId('delta-support')).toContainText('syncrepl');
  await expect(ldap.step('delta')).toContainText('syncrepl');

  await page.reload();
  await waitForHydration(page, { forms: true });
  await expect(card.getByTestId('delta-detected')).toContainText('Delta method detected by Test connection: syncrepl');
  await expect(card.getByTestId('delta-detected')).toContainText(d.ldap_url);
  await card.locator('select[name="mode"]').selectOption('delta');
  await card.getByRole('button', { name: 'Save sync settings' }).click();
  await expect(card.getByRole('status')).toHaveText('Saved.');
  await page.reload();
  await expect(page.getByRole('form', { name: 'Sync settings' }).locator('select[name="mode"]')).toHaveValue('delta');

  // The first run in delta mode is a full one (it records the cookie); the next reads changes only.
  const run = async (): Promise<number> => {
    const res = await page.request.post('/api/v1/directories/ldap_ha/sync', { headers, data: {} });
    expect(res.status(), await res.text()).toBe(202);
    const id = (await res.json()).id as number;
    await expect
      .poll(async () => (await (await page.request.get(`/api/v1/sync/runs/${id}`)).json()).run.state, { timeout: 20_000 })
      .not.toBe('running');
    return id;
  };
  const full = await run();
  modifyDirectory(d, `dn: uid=delta1,ou=e2edelta,${d.base_dn}\nchangetype: modify\nreplace: cn\ncn: Delta One\n`);
  const delta = await run();

  await page.goto('/sync/runs');
  const runs = page.getByTestId('sync-runs');
  await expect(runs.locator(`tr[data-run="${full}"]`).getByTestId('run-kind')).toHaveText('full');
  await expect(runs.locator(`tr[data-run="${delta}"]`).getByTestId('run-kind')).toHaveText('delta');
  await runs.locator(`tr[data-run="${delta}"]`).getByRole('link', { name: `#${delta}` }).click();
  await expect(page.getByRole('heading', { level: 1 })).toContainText(`Delta sync run #${delta}`);
  await expect(page.getByTestId('run-notes')).toContainText('delta read (syncrepl');

  // Back to full mode: the other specs share LDAP HA.
  const off = await page.request.put('/api/v1/directories/ldap_ha/sync/settings', { headers, data: { mode: 'full' } });
  expect(off.status(), await off.text()).toBe(200);
});
