"""Seed a freshly provisioned (offline) Samba AD domain for Bindery's tests.

    python3 seed.py SMB_CONF SERVICE_PASSWORD REPL_PASSWORD USER_PASSWORD [EXTRA]

Runs against sam.ldb directly (no server), as the system: a few hundred
milliseconds instead of one samba-tool process per object.

  OU=People    user01..user20 (password USER_PASSWORD), disabled01 (disabled)
  OU=Groups    staff (user01..user05), admins (user01)
  OU=Services  bindery-svc: an ordinary domain user (no extra rights);
               bindery-repl: holds "Replicating Directory Changes" on the
               domain and may list and read Deleted Objects, as a DirSync
               account is set up on real sites.
  a tombstone  deleted01, created and deleted.
  EXTRA        extra000001.. in OU=People: enabled, no password (uac 544),
               for measurements (1,000 take ~6 s, 10,000 ~6 min).
"""
import sys

import samba.getopt  # noqa: F401  (loads the Samba Python environment)
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
from samba.sd_utils import SDUtils

conf, svc_pw, repl_pw, user_pw = sys.argv[1:5]
extra = int(sys.argv[5]) if len(sys.argv) > 5 else 0
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
base = str(db.domain_dn())

# Passwords never expire: the template is cached and reused for weeks.
import ldb  # noqa: E402
m = ldb.Message(ldb.Dn(db, base))
m["maxPwdAge"] = ldb.MessageElement("0", ldb.FLAG_MOD_REPLACE, "maxPwdAge")
db.modify(m)

for ou in ("People", "Groups", "Services"):
    db.create_ou(f"OU={ou},{base}")

for i in range(1, 21):
    name = f"user{i:02d}"
    db.newuser(name, user_pw, userou="OU=People", givenname="User", surname=f"Number {i}",
               mailaddress=f"{name}@bindery.test")
db.newuser("disabled01", user_pw, userou="OU=People", givenname="Disabled", surname="User",
           mailaddress="disabled01@bindery.test")
db.disable_account("(sAMAccountName=disabled01)")

db.newgroup("staff", groupou="OU=Groups")
db.add_remove_group_members("staff", [f"user{i:02d}" for i in range(1, 6)], add_members_operation=True)
db.newgroup("admins", groupou="OU=Groups")
db.add_remove_group_members("admins", ["user01"], add_members_operation=True)

db.newuser("bindery-svc", svc_pw, userou="OU=Services", givenname="Bindery", surname="Service")
db.newuser("bindery-repl", repl_pw, userou="OU=Services", givenname="Bindery", surname="Replication")
repl_sid = db.search(base=f"CN=bindery-repl,OU=Services,{base}", attrs=["objectSid"])[0]["objectSid"][0]
from samba.dcerpc import security  # noqa: E402
from samba.ndr import ndr_unpack  # noqa: E402
sid = str(ndr_unpack(security.dom_sid, repl_sid))
# DS-Replication-Get-Changes (1131f6aa-...): what DirSync without object
# security requires.
SDUtils(db).dacl_add_ace(base, f"(OA;;CR;1131f6aa-9c07-11d1-f79f-00c04fc2dcd2;;{sid})")
# List and read Deleted Objects (as `dsacls "CN=Deleted Objects,..." /G
# account:LCRP` does on Windows): Samba shows tombstones through DirSync
# only to accounts that may read them, the right above is not enough.
SDUtils(db).dacl_add_ace(f"CN=Deleted Objects,{base}", f"(A;CI;LCRP;;;{sid})")

# One deletion, as every real domain has: a tombstone in Deleted Objects
# (Test connection looks for one to tell whether deletions are visible).
db.newuser("deleted01", user_pw, userou="OU=People")
db.deleteuser("deleted01")

if extra:
    db.transaction_start()
    for i in range(1, extra + 1):
        name = f"extra{i:06d}"
        db.add({"dn": f"CN={name},OU=People,{base}", "objectClass": "user", "sAMAccountName": name,
                "userAccountControl": "544", "mail": f"{name}@bindery.test"})
    db.transaction_commit()
