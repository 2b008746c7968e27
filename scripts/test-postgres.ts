// CLI wrapper for the throwaway PostgreSQL of the test suite: `start DIR` prints a URL, `stop DIR`.
import { startPostgres, stopPostgres } from '../test/support/postgres.ts';

const [verb, dir] = process.argv.slice(2);
if (!dir || (verb !== 'start' && verb !== 'stop')) {
  console.error('usage: test-postgres.ts start|stop DIR');
  process.exit(2);
}
if (verb === 'start') {
  const pg = await startPostgres(dir);
  console.log(pg.url);
} else {
  stopPostgres(dir);
}
