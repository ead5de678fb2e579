// graphile-worker batched baseline for tests/e2e/benches/queue.rs.
//
//   node worker.js setup <jobs>    install graphile-worker's schema, then add <jobs> due no-op jobs
//   node worker.js run <pools> <batch> <seconds>
//                                  <pools> worker pools (one run() each, like the bench's
//                                  <pools> contract workers), each fetching <batch> jobs at a
//                                  time into its local queue and completing in batches
//                                  (completeJobBatchDelay 0), <batch> jobs in flight; prints
//                                  {"executed", "seconds"}: jobs run within <seconds> of the
//                                  first one, and the span they took (shorter if they ran out).
//
// DATABASE_URL names the database (the bench gives graphile its own).
import { Logger, run, runMigrations } from "graphile-worker";
import pg from "pg";

const [mode, a, b, c] = process.argv.slice(2);
const connectionString = process.env.DATABASE_URL;
if (!connectionString) throw new Error("DATABASE_URL is required");
// The bench measures with synchronous_commit on, like its other loops.
const options = "-c synchronous_commit=on";

if (mode === "setup") {
  const jobs = Number(a);
  await runMigrations({ connectionString });
  const client = new pg.Client({ connectionString, options });
  await client.connect();
  await client.query("delete from graphile_worker._private_jobs");
  await client.query(
    `select graphile_worker.add_jobs(array(
       select ('bench', '{}'::json, null, now() - interval '1 hour', null, null, null, null)::graphile_worker.job_spec
         from generate_series(1, $1::int)))`,
    [jobs],
  );
  await client.query("vacuum analyze graphile_worker._private_jobs");
  await client.end();
  console.log(JSON.stringify({ added: jobs }));
} else if (mode === "run") {
  const pools = Number(a);
  const batch = Number(b);
  const seconds = Number(c);
  let executed = 0;
  let first = 0;
  let last = 0;
  let deadline = Infinity;
  let stopping = null;
  const runners = [];
  const finish = () => {
    if (!stopping) stopping = Promise.all(runners.map((r) => r.stop()));
  };
  const taskList = {
    bench: async () => {
      const now = performance.now();
      if (!first) {
        first = now;
        deadline = first + seconds * 1000;
        setTimeout(finish, seconds * 1000);
      }
      if (now <= deadline) {
        executed += 1;
        last = now;
      }
    },
  };
  for (let i = 0; i < pools; i++) {
    runners.push(
      await run({
        noHandleSignals: true,
        taskList,
        preset: {
          worker: {
            connectionString: `${connectionString}${connectionString.includes("?") ? "&" : "?"}options=${encodeURIComponent(options)}`,
            concurrentJobs: batch,
            maxPoolSize: 2,
            pollInterval: 100,
            localQueue: { size: batch },
            completeJobBatchDelay: 0,
            failJobBatchDelay: 0,
          },
        },
        // Errors only: the bench prints one line of JSON.
        logger: new Logger(() => (level, message) => {
          if (level === "error") console.error(message);
        }),
      }),
    );
  }
  // Stop early when the jobs run out (no first job within 30 s: nothing to do).
  setTimeout(() => { if (!first) finish(); }, 30000);
  while (!stopping) await new Promise((r) => setTimeout(r, 50));
  await stopping;
  // Ran dry before the deadline: the span of the jobs run is the time.
  console.log(JSON.stringify({ executed, seconds: executed ? Math.max(last - first, 1) / 1000 : 0 }));
  process.exit(0);
} else {
  console.error("usage: node worker.js setup <jobs> | run <pools> <batch> <seconds>");
  process.exit(2);
}
