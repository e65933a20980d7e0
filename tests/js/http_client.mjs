// The npm ConvexHttpClient (convex 1.48.0) against a Basalt deployment.
// Usage: BASALT_URL=http://127.0.0.1:PORT [BASALT_ADMIN_KEY=…] node http_client.mjs [check ...]

import { ConvexHttpClient } from "convex/browser";
import { ROUND_TRIP, describe, fn, main, settle, useIntegers } from "./lib.mjs";

const checks = {
  integers: {
    async run(t) {
      const client = t.http();
      await client.mutation(fn("values:store_count"), { tag: t.tag, n: 41 });
      return await useIntegers((path) => client.query(fn(path), { tag: t.tag }));
    },
  },

  calls: {
    async run(t) {
      const client = t.http();
      const id = await client.mutation(fn("notes:add"), { tag: t.tag, body: "hello", pos: 1 });
      const bodies = await client.query(fn("notes:bodies"), { tag: t.tag });
      const action = await client.action(fn("relay:add_all"), {
        tag: `${t.tag}-action`,
        bodies: ["a", "b"],
      });
      const echoed = await client.action(fn("values:echo_action"), { value: { n: 3n } });
      const shout = await client.query(fn("values:shout"), { text: "hey" });
      const anonymous_logs = t.recorder.logs.map((l) => l.text);
      // A production server sends log lines to admin callers only.
      const admin = t.http();
      admin.setAdminAuth(t.adminKey);
      const admin_shout = await admin.query(fn("values:shout"), { text: "hey" });
      return {
        id: describe(id),
        bodies: describe(bodies),
        action: describe(action),
        echo_action: describe(echoed),
        shout,
        admin_shout,
        anonymous_logs,
        logs: t.recorder.logs.map((l) => l.text),
      };
    },
  },

  values: {
    async run(t) {
      const client = t.http();
      const echo = {};
      const stored = {};
      for (const [name, value] of Object.entries(ROUND_TRIP)) {
        echo[name] = await settle(client.query(fn("values:echo"), { value }));
        // Through storage as well: a mutation writes it, a query reads it back.
        const tag = `${t.tag}-${name}`;
        await client.mutation(fn("values:store"), { tag, value });
        stored[name] = await settle(client.query(fn("values:load"), { tag }));
      }
      return { echo, stored };
    },
  },

  convex_error: {
    async run(t) {
      const client = t.http();
      const data = { code: "NOPE", n: 7n, list: ["x", true, null] };
      return {
        mutation: await settle(client.mutation(fn("values:fail_with"), { data })),
        mutation_string: await settle(
          client.mutation(fn("values:fail_with"), { data: "plain message" }),
        ),
        query: await settle(client.query(fn("values:query_fail_with"), { data })),
        action: await settle(client.action(fn("relay:fail_inside"), { data: { code: "DEEP" } })),
      };
    },
  },

  plain_error: {
    async run(t) {
      const client = t.http();
      const admin = t.http();
      admin.setAdminAuth(t.adminKey);
      return {
        query: await settle(client.query(fn("values:boom"), {})),
        admin_query: await settle(admin.query(fn("values:boom"), {})),
      };
    },
  },

  consistent_query: {
    async run(t) {
      const paths = [];
      const recordingFetch = (url, init) => {
        paths.push(new URL(String(url)).pathname);
        return fetch(url, init);
      };
      const reader = new ConvexHttpClient(t.url, {
        logger: t.recorder.logger,
        fetch: recordingFetch,
      });
      const writer = t.http();
      const bodies = fn("notes:bodies");
      await writer.mutation(fn("notes:add"), { tag: t.tag, body: "before", pos: 1 });
      // The first consistentQuery fixes a timestamp (POST /api/query_ts); every later
      // one on this client reads at that timestamp (POST /api/query_at_ts).
      const first = await settle(reader.consistentQuery(bodies, { tag: t.tag }));
      await writer.mutation(fn("notes:add"), { tag: `${t.tag}-other`, body: "x", pos: 1 });
      const after_unrelated_write = await settle(reader.consistentQuery(bodies, { tag: t.tag }));
      await writer.mutation(fn("notes:add"), { tag: t.tag, body: "after", pos: 2 });
      const after_write = await settle(reader.consistentQuery(bodies, { tag: t.tag }));
      const latest = await settle(reader.query(bodies, { tag: t.tag }));
      const fresh_client = await settle(t.http().consistentQuery(bodies, { tag: t.tag }));
      return { paths, first, after_unrelated_write, after_write, latest, fresh_client };
    },
  },

  consistent_query_patch: {
    async run(t) {
      // counters:increment patches the counter without changing any index key.
      const reader = t.http();
      const writer = t.http();
      const get = fn("counters:get");
      await writer.mutation(fn("counters:increment"), { tag: t.tag });
      const first = await settle(reader.consistentQuery(get, { tag: t.tag }));
      await writer.mutation(fn("counters:increment"), { tag: t.tag });
      const after_patch = await settle(reader.consistentQuery(get, { tag: t.tag }));
      const latest = await settle(reader.query(get, { tag: t.tag }));
      return { first, after_patch, latest };
    },
  },

  admin_auth: {
    async run(t) {
      const anonymous = t.http();
      await anonymous.mutation(fn("notes:add"), { tag: t.tag, body: "x", pos: 1 });
      const denied = await settle(anonymous.query(fn("notes:secret_count"), { tag: t.tag }));
      const admin = t.http();
      admin.setAdminAuth(t.adminKey);
      const allowed = await settle(admin.query(fn("notes:secret_count"), { tag: t.tag }));
      return { denied, allowed };
    },
  },
};

await main("http_client", checks);
