-- Lease renewal renews only the leases past half their life.
--
-- A sync now renews only the holder's leases that would expire by the
-- midpoint of `now` and the new expiry (see the store's `sync_leases`), so a
-- replica holding leases for thousands of users no longer rewrites all of
-- them on each flush. The holder indexes gain the expiry, so the renewal
-- reads just the rows it rewrites.

DROP INDEX leases_holder;
CREATE INDEX leases_holder_expiry ON leases (holder, expires_at);
DROP INDEX rate_leases_holder;
CREATE INDEX rate_leases_holder_expiry ON rate_leases (holder, expires_at);
