-- ias schema for PostgreSQL, version 3: permission seeds for RBAC, audit
-- filters, as the SQLite store's version 3. Never edit this file once
-- released: add a new numbered migration instead.

-- A member may use only its own keys and read only its own usage. The
-- `model.read` grant of version 1 had scope `own`, which never reaches an
-- organization's model list, so it granted nothing; it is removed so that
-- the seeds say what members may do.
DELETE FROM role_permissions
    WHERE role = 'member' AND permission = 'model.read' AND scope = 'own';

-- Descriptions that say how far each permission reaches.
UPDATE permissions SET description = 'Create API keys: own scope for oneself, org or global for others'
    WHERE name = 'key.create';
UPDATE permissions SET description = 'Give a user the system_admin role, or change a system_admin''s account or keys'
    WHERE name = 'role.grant_system_admin';
UPDATE permissions SET description = 'Read the audit log; global scope also verifies its hash chain'
    WHERE name = 'audit.read';

-- `audit list --action A [--since T]` reads newest first by action.
CREATE INDEX audit_log_action ON audit_log (action, id);
