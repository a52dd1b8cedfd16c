-- ias schema version 7: an index behind every paged list and hot lookup,
-- for a node holding thousands of organizations, a hundred thousand users
-- and a million keys. Never edit this file once released: add a new
-- numbered migration instead.

-- `user list` and the usage report read an organization's users by id, a
-- page at a time.
CREATE INDEX users_org ON users (org_id, id);

-- Daily usage of one user reads that user's rows by day and model instead
-- of every row of the organization's days.
CREATE INDEX usage_daily_user ON usage_daily (user_id, day, model);

-- `audit list --since` reads the entries after a time, not the older ones.
CREATE INDEX audit_log_at ON audit_log (at);

-- `audit list --org O --action A` reads that organization's entries of
-- that action, however rare, without the organization's others.
CREATE INDEX audit_log_org_action ON audit_log (org_id, action, id);
