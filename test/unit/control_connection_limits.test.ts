import test from 'ava';
import { ConnectionLimiter } from '../../daemon/control_connection_limits.js';

test('per-user limit, then the total for everyone but root; refusals are reported once per episode', (t) => {
  const limiter = new ConnectionLimiter({ maxConnections: 3, maxConnectionsPerUser: 2 });
  const first = limiter.admit(1000);
  const second = limiter.admit(1000);
  t.true(first.admitted && second.admitted);
  t.like(limiter.admit(1000), { admitted: false, scope: 'user', limit: 2, firstRefusal: true });
  t.like(limiter.admit(1000), { admitted: false, scope: 'user', firstRefusal: false });
  t.true(limiter.admit(1001).admitted);
  t.like(limiter.admit(1002), { admitted: false, scope: 'all', limit: 3, firstRefusal: true });
  // Root counts only against its own per-user limit.
  t.true(limiter.admit(0).admitted);
  t.true(limiter.admit(0).admitted);
  t.like(limiter.admit(0), { admitted: false, scope: 'user' });

  if (!first.admitted) return;
  first.release();
  first.release(); // twice is once
  t.is(limiter.openConnections(1000), 1);
  // Back under both limits: the next refusal is a new episode.
  t.true(limiter.admit(1002).admitted);
  t.like(limiter.admit(1003), { admitted: false, scope: 'all', firstRefusal: true });
});
