-- Live deprovisioning of Active Directory (issue 17 §2): the stream's
-- source follows the directory (syncrepl; AD change notification with
-- DirSync or USN), and an AD stream may not see everything (deletions when
-- the service account may not read Deleted Objects). Both are shown.
ALTER TABLE live_streams ADD COLUMN method TEXT NOT NULL DEFAULT '';  -- how it works, in words
ALTER TABLE live_streams ADD COLUMN unseen TEXT NOT NULL DEFAULT '';  -- what it cannot see, in words ('' nothing)
