// The npm ConvexClient (convex 1.48.0, sync WebSocket) against a Basalt deployment.
// Usage: BASALT_URL=http://127.0.0.1:PORT node ws_client.mjs [check ...]
//
// Every check but `bundled_websocket` passes the `ws` package's WebSocket
// (wrapped to record frames) as `webSocketConstructor`; `bundled_websocket`
// passes none, so the client uses the copy of `ws` bundled in convex's Node build.

import {
  ROUND_TRIP,
  decodeTs,
  deadline,
  describe,
  fn,
  main,
  settle,
  sleep,
  useIntegers,
  waitFor,
} from "./lib.mjs";

/** Subscribe and collect every value (and error) the callback receives. */
function watch(client, path, args) {
  const seen = [];
  const errors = [];
  const sub = client.onUpdate(
    fn(path),
    args,
    (value) => seen.push({ at: Date.now(), value: describe(value) }),
    (error) => errors.push({ at: Date.now(), error: describe(error) }),
  );
  const values = () => seen.map((s) => s.value);
  return { sub, seen, errors, values };
}

/** For each successful MutationResponse: its ts and the ts of the next Transition. */
function mutationTimestamps(recorder) {
  const pairs = [];
  const inbound = recorder.messages("in");
  inbound.forEach((msg, i) => {
    if (msg.type !== "MutationResponse" || !msg.success) {
      return;
    }
    const next = inbound.slice(i + 1).find((m) => m.type === "Transition");
    pairs.push({
      mutation_ts: msg.ts == null ? null : decodeTs(msg.ts),
      transition_ts: next ? decodeTs(next.endVersion.ts) : null,
    });
  });
  return pairs;
}

/** The server's message of a failed call, as the HTTP API reports it. */
async function httpMessage(t, kind, path, args, { admin = false } = {}) {
  const client = t.http();
  if (admin) client.setAdminAuth(t.adminKey);
  try {
    await client[kind](fn(path), args);
  } catch (error) {
    return error.message;
  }
  throw new Error(`${kind} ${path} did not fail over HTTP`);
}

/** An unsigned JWT that looks real (the server has no provider for its issuer). */
function fakeJwt() {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: "https://issuer.invalid", sub: "user-1", aud: "basalt", iat: now };
  return [
    part({ alg: "RS256", typ: "JWT", kid: "none" }),
    part({ ...claims, exp: now + 3600 }),
    Buffer.from("not a signature").toString("base64url"),
  ].join(".");
}

const checks = {
  integers: {
    async run(t) {
      const client = t.client();
      await client.mutation(fn("values:store_count"), { tag: t.tag, n: 41 });
      const used = await useIntegers((path) => client.query(fn(path), { tag: t.tag }));
      // A subscription's value crosses the same way.
      const watched = watch(client, "values:counts", { tag: t.tag });
      await waitFor(() => watched.seen.length > 0, 10000, "the subscription's first value");
      return { ...used, subscribed: watched.values()[0], ws: t.recorder.summary() };
    },
  },

  query: {
    async run(t) {
      const client = t.client();
      const empty = await client.query(fn("notes:bodies"), { tag: t.tag });
      const echo = {};
      for (const [name, value] of Object.entries(ROUND_TRIP)) {
        echo[name] = await settle(client.query(fn("values:echo"), { value }));
      }
      const shout = await client.query(fn("values:shout"), { text: "ws" });
      const anonymous_logs = t.recorder.logs.map((l) => l.text);
      const ws = t.recorder.summary();
      // A production server sends log lines to admin callers only.
      const admin = t.client();
      admin.setAdminAuth(t.adminKey);
      const admin_shout = await admin.query(fn("values:shout"), { text: "ws" });
      return {
        empty: describe(empty),
        echo,
        shout,
        admin_shout,
        anonymous_logs,
        logs: t.recorder.logs.map((l) => l.text),
        ws,
      };
    },
  },

  mutation: {
    async run(t) {
      const client = t.client();
      const id = await client.mutation(fn("notes:add"), { tag: t.tag, body: "hello", pos: 1 });
      const stored = await client.mutation(fn("values:store"), {
        tag: t.tag,
        value: ROUND_TRIP.nested,
      });
      const bodies = await client.query(fn("notes:bodies"), { tag: t.tag });
      const loaded = await client.query(fn("values:load"), { tag: t.tag });
      return {
        id: describe(id),
        stored_id: describe(stored),
        bodies: describe(bodies),
        loaded: describe(loaded),
        timestamps: mutationTimestamps(t.recorder),
        ws: t.recorder.summary(),
      };
    },
  },

  action: {
    async run(t) {
      const client = t.client();
      const echoed = await client.action(fn("values:echo_action"), {
        value: ROUND_TRIP.nested,
      });
      const relayed = await client.action(fn("relay:add_all"), {
        tag: t.tag,
        bodies: ["a", "b", "c"],
      });
      const bodies = await client.query(fn("notes:bodies"), { tag: t.tag });
      return {
        echo: describe(echoed),
        relay: describe(relayed),
        bodies: describe(bodies),
        ws: t.recorder.summary(),
      };
    },
  },

  on_update_push: {
    async run(t) {
      const client = t.client();
      const w = watch(client, "notes:bodies", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      // Written by another client, over HTTP: the server must push it.
      const writtenAt = Date.now();
      await t.http().mutation(fn("notes:add"), { tag: t.tag, body: "pushed!", pos: 1 });
      await waitFor(() => w.seen.length >= 2, 5000, "the pushed second value");
      const pushMs = w.seen[1].at - writtenAt;
      // An unrelated write must not produce a new value for this subscription.
      await t.http().mutation(fn("notes:add"), { tag: `${t.tag}-x`, body: "other", pos: 1 });
      await t.http().mutation(fn("notes:add"), { tag: t.tag, body: "third", pos: 2 });
      await waitFor(() => w.seen.length >= 3, 5000, "the third value");
      w.sub.unsubscribe();
      return {
        values: w.values(),
        errors: w.errors,
        push_ms: pushMs,
        ws: t.recorder.summary(),
      };
    },
  },

  unrelated_commit: {
    async run(t) {
      const client = t.client();
      const w = watch(client, "notes:bodies", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      const before = t.recorder.messages("in", "Transition").length;
      // A commit that writes nothing this client reads, then one that does.
      const writer = t.http();
      await writer.mutation(fn("notes:add"), { tag: `${t.tag}-other`, body: "other", pos: 1 });
      await writer.mutation(fn("notes:add"), { tag: t.tag, body: "mine", pos: 1 });
      await waitFor(() => w.seen.length >= 2, 5000, "the pushed value");
      const transitions = t.recorder.messages("in", "Transition").slice(before);
      return {
        values: w.values(),
        transitions: transitions.map((m) => ({
          modifications: m.modifications.map((mod) => mod.type),
          start: m.startVersion,
          end: m.endVersion,
        })),
        ws: t.recorder.summary(),
      };
    },
  },

  read_your_writes: {
    async run(t) {
      const client = t.client();
      const w = watch(client, "notes:bodies", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      const rounds = [];
      for (let i = 0; i < 3; i++) {
        await client.mutation(fn("notes:add"), { tag: t.tag, body: `n${i}`, pos: i });
        // Nothing awaited in between: what the client shows now is what it had
        // when the mutation's promise resolved.
        rounds.push({
          current: describe(w.sub.getCurrentValue()),
          last_callback: w.seen.at(-1).value,
        });
      }
      return {
        rounds,
        values: w.values(),
        timestamps: mutationTimestamps(t.recorder),
        ws: t.recorder.summary(),
      };
    },
  },

  read_your_writes_patch: {
    async run(t) {
      // counters:increment inserts the counter once, then patches it: the patch
      // changes no index key of the document.
      const client = t.client();
      const w = watch(client, "counters:get", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      const rounds = [];
      for (let i = 0; i < 3; i++) {
        const result = await client.mutation(fn("counters:increment"), { tag: t.tag });
        rounds.push({
          result: describe(result),
          current: describe(w.sub.getCurrentValue()),
          last_callback: w.seen.at(-1).value,
        });
      }
      return {
        rounds,
        values: w.values(),
        timestamps: mutationTimestamps(t.recorder),
        ws: t.recorder.summary(),
      };
    },
  },

  on_update_push_patch: {
    async run(t) {
      const writer = t.http();
      await writer.mutation(fn("counters:increment"), { tag: t.tag });
      const client = t.client();
      const w = watch(client, "counters:get", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      // Another client patches the document the subscription read.
      await writer.mutation(fn("counters:increment"), { tag: t.tag });
      const pushed = await settle(
        waitFor(() => w.seen.length >= 2, 3000, "the value pushed after a patch"),
      );
      return {
        values: w.values(),
        pushed: pushed.error ?? true,
        http_value: await writer.query(fn("counters:get"), { tag: t.tag }),
        ws: t.recorder.summary(),
      };
    },
  },

  convex_error_query: {
    async run(t) {
      const client = t.client();
      const data = { code: "Q_FAIL", n: 7n, list: ["x", true, null] };
      const query = await settle(client.query(fn("values:query_fail_with"), { data }));
      const w = watch(client, "values:query_fail_with", { data: "as a subscription" });
      await waitFor(() => w.errors.length >= 1, 5000, "the subscription's error");
      return {
        query,
        subscription: w.errors.map((e) => e.error),
        subscription_values: w.values(),
        ws: t.recorder.summary(),
      };
    },
  },

  convex_error_mutation: {
    async run(t) {
      const client = t.client();
      const data = { code: "M_FAIL", n: 7n };
      const mutation = await settle(client.mutation(fn("values:fail_with"), { data }));
      const stringData = await settle(
        client.mutation(fn("values:fail_with"), { data: "plain message" }),
      );
      // Its write rolled back, and the connection still works.
      const rolledBack = await settle(client.mutation(fn("notes:add_then_fail"), { tag: t.tag }));
      const bodies = await client.query(fn("notes:bodies"), { tag: t.tag });
      return {
        mutation,
        string_data: stringData,
        rolled_back: rolledBack,
        bodies_after: describe(bodies),
        ws: t.recorder.summary(),
      };
    },
  },

  convex_error_action: {
    async run(t) {
      const client = t.client();
      const action = await settle(
        client.action(fn("relay:fail_inside"), { data: { code: "A_FAIL", n: 7n } }),
      );
      return { action, ws: t.recorder.summary() };
    },
  },

  plain_error: {
    async run(t) {
      const client = t.client();
      const query = await settle(client.query(fn("values:boom"), {}));
      const mutationArgs = { tag: t.tag, count: 1 };
      const mutation = await settle(client.mutation(fn("notes:add_many_then_fail"), mutationArgs));
      const action = await settle(client.action(fn("relay:fail_inside"), {}));
      const ws = t.recorder.summary();
      // The same calls as an admin, who is told what was raised.
      const admin = t.client();
      admin.setAdminAuth(t.adminKey);
      const asAdmin = { admin: true };
      return {
        query,
        mutation,
        action,
        http_messages: {
          query: await httpMessage(t, "query", "values:boom", {}),
          mutation: await httpMessage(t, "mutation", "notes:add_many_then_fail", mutationArgs),
          action: await httpMessage(t, "action", "relay:fail_inside", {}),
        },
        admin: {
          query: await settle(admin.query(fn("values:boom"), {})),
          mutation: await settle(admin.mutation(fn("notes:add_many_then_fail"), mutationArgs)),
          action: await settle(admin.action(fn("relay:fail_inside"), {})),
        },
        admin_http_messages: {
          query: await httpMessage(t, "query", "values:boom", {}, asAdmin),
          mutation: await httpMessage(
            t,
            "mutation",
            "notes:add_many_then_fail",
            mutationArgs,
            asAdmin,
          ),
          action: await httpMessage(t, "action", "relay:fail_inside", {}, asAdmin),
        },
        ws,
      };
    },
  },

  set_auth_rejected: {
    timeout: 20000,
    async run(t) {
      const client = t.client();
      const token = fakeJwt();
      const fetches = [];
      const changes = [];
      client.setAuth(
        async (options) => {
          fetches.push(describe(options));
          return token;
        },
        (isAuthenticated) => changes.push(isAuthenticated),
      );
      await waitFor(() => changes.length >= 1, 15000, "setAuth's onChange");
      // The client carries on unauthenticated.
      const after = await deadline(
        client.query(fn("notes:bodies"), { tag: t.tag }),
        5000,
        "a query after the rejected token",
      );
      const authenticate = t.recorder
        .messages("out", "Authenticate")
        .map((m) => ({ ...m, value: m.value === token ? "<the token>" : m.value }));
      return {
        changes,
        fetches,
        authenticate,
        auth_errors: t.recorder.messages("in", "AuthError"),
        query_after: describe(after),
        auth_after: describe(client.getAuth() ?? null),
        ws: t.recorder.summary(),
      };
    },
  },

  bundled_websocket: {
    async run(t) {
      // No webSocketConstructor: convex's Node entry point brings its own `ws`.
      const client = t.client({ bundled: true });
      const w = watch(client, "notes:bodies", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      const result = await client.mutation(fn("counters:increment"), { tag: t.tag });
      const query = await client.query(fn("counters:get"), { tag: t.tag });
      await t.http().mutation(fn("notes:add"), { tag: t.tag, body: "pushed!", pos: 1 });
      await waitFor(() => w.seen.length >= 2, 5000, "the pushed second value");
      const action = await client.action(fn("values:echo_action"), { value: 5n });
      const state = client.connectionState();
      return {
        values: w.values(),
        mutation: describe(result),
        query: describe(query),
        action: describe(action),
        connection_count: state.connectionCount,
        connection_retries: state.connectionRetries,
      };
    },
  },

  idle: {
    timeout: 45000,
    async run(t) {
      const idleMs = 20000;
      const client = t.client();
      // npm reconnects after 60 s without a message. Lower that to 18 s on this
      // client (a private field of the pinned 1.48.0): a server that sends no JSON
      // Ping within 18 s of silence shows up as a reconnect inside the idle window.
      const manager = client.client.webSocketManager;
      if (typeof manager?.serverInactivityThreshold !== "number") {
        throw new Error("convex changed: no webSocketManager.serverInactivityThreshold");
      }
      manager.serverInactivityThreshold = 18000;
      const w = watch(client, "notes:bodies", { tag: t.tag });
      await waitFor(() => w.seen.length >= 1, 5000, "the subscription's first value");
      const idleFrom = t.recorder.frames.length;
      const idleStart = t.recorder.frames.at(-1).t;
      await sleep(idleMs);
      const state = client.connectionState();
      const during = t.recorder.frames.slice(idleFrom).map((f) => ({
        t: f.t - idleStart,
        dir: f.dir,
        type: f.msg?.type ?? f.code ?? null,
      }));
      // Still live: a write elsewhere reaches the subscription.
      await t.http().mutation(fn("notes:add"), { tag: t.tag, body: "after idle", pos: 1 });
      await waitFor(() => w.seen.length >= 2, 5000, "a value pushed after the idle time");
      return {
        idle_ms: idleMs,
        during,
        connection_count: state.connectionCount,
        connection_retries: state.connectionRetries,
        connected: state.isWebSocketConnected,
        values: w.values(),
        reconnect_logs: t.recorder.logs.filter((l) => /reconnect/i.test(l.text)),
        ws: t.recorder.summary(),
      };
    },
  },
};

await main("ws_client", checks);
