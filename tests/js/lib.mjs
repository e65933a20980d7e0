// Shared helpers of the npm client checks (run by tests/server/test_npm_client.py).
//
// A script is a table of named checks. `node <script>.mjs [check ...]` runs the
// named checks (all of them without arguments), prints ONE line of JSON on
// stdout — {"script", "results": {check: {"ok", "details" | "error", ...}}} —
// and exits 1 if any check failed, after saying which on stderr. Checks report
// what they observed (values described by `describe`); the pytest wrappers
// decide what is right.
//
// Environment: BASALT_URL (the deployment URL, required), BASALT_ADMIN_KEY
// (only for checks that need admin rights), BASALT_FRAMES=1 (report every
// WebSocket frame, also of checks that passed; for debugging).

import WebSocket from "ws";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError } from "convex/values";

const started = Date.now();
const elapsed = () => Date.now() - started;

/** Values whose JS types the JSON encoding must keep (int64, bytes, special floats). */
export const ROUND_TRIP = {
  int64: -5n,
  int64_big: 2n ** 62n,
  int64_min: -(2n ** 63n),
  bytes: new Uint8Array([0, 1, 254, 255]).buffer,
  empty_bytes: new ArrayBuffer(0),
  nan: NaN,
  minus_zero: -0,
  infinity: Infinity,
  minus_infinity: -Infinity,
  float: 2.5,
  nested: { i: 7n, b: new Uint8Array([9]).buffer, f: [0.5, -0], s: "é", n: null, t: true },
};

/** A function reference from a "module:function" path. */
export const fn = (path) => makeFunctionReference(path);

export function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`the environment variable ${name} is not set`);
  }
  return value;
}

/** `promise`, or an Error naming `what` after `ms` milliseconds. */
export async function deadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `predicate` until it returns something truthy; fail after `ms`. */
export async function waitFor(predicate, ms, what, interval = 20) {
  const end = Date.now() + ms;
  for (;;) {
    const result = await predicate();
    if (result) {
      return result;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** The promise's outcome as data: {value} or {error} (both described). */
export async function settle(promise) {
  try {
    return { value: describe(await promise) };
  } catch (error) {
    return { error: describe(error) };
  }
}

/** What a program does with the integers of `values:counts`, as data: the
 * count plus one and the result's JSON text (both throw on a BigInt). */
export async function useIntegers(call) {
  const attempt = (f) => {
    try {
      return { value: describe(f()) };
    } catch (error) {
      return { error: `${error.constructor.name}: ${error.message}` };
    }
  };
  const counts = await call("values:counts");
  const validated = await call("values:count_int64");
  return {
    counts: describe(counts),
    validated: describe(validated),
    plus_one: attempt(() => counts.count + 1),
    json: attempt(() => JSON.stringify({ count: counts.count, next: counts.next })),
  };
}

/** A wire timestamp (base64 of a little-endian u64) as a decimal string. */
export function decodeTs(text) {
  return Buffer.from(text, "base64").readBigUInt64LE(0).toString();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A JSON-able picture of a Convex value (or an error) that keeps its JS type. */
export function describe(value) {
  if (value === undefined) {
    return { $undefined: true };
  }
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return value;
  }
  if (typeof value === "bigint") {
    return { $bigint: value.toString() };
  }
  if (typeof value === "number") {
    if (Number.isNaN(value)) return { $number: "NaN" };
    if (Object.is(value, -0)) return { $number: "-0" };
    if (value === Infinity) return { $number: "Infinity" };
    if (value === -Infinity) return { $number: "-Infinity" };
    return value;
  }
  if (value instanceof ArrayBuffer) {
    return { $bytes: Buffer.from(value).toString("hex") };
  }
  if (value instanceof Error) {
    const picture = {
      $error: value.constructor.name,
      isConvexError: value instanceof ConvexError,
      message: value.message,
    };
    if ("data" in value) {
      picture.data = describe(value.data);
    }
    return picture;
  }
  if (Array.isArray(value)) {
    return value.map(describe);
  }
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      return { $other: Object.prototype.toString.call(value) };
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, describe(v)]));
  }
  return { $other: String(value) };
}

/** What one check saw: client log lines and WebSocket frames. */
export class Recorder {
  constructor() {
    this.logs = [];
    this.frames = [];
    this.sockets = 0;
    const line =
      (level) =>
      (...args) => {
        const text = args.map((a) => (typeof a === "string" ? a : String(a))).join(" ");
        this.logs.push({ level, text });
        process.stderr.write(`[${elapsed()} ms] convex ${level}: ${text}\n`);
      };
    // The shape convex's `logger` option expects; keeps stdout for the result line.
    this.logger = {
      log: line("info"),
      warn: line("warn"),
      error: line("error"),
      logVerbose: () => {},
    };
  }

  /** A `ws` WebSocket class that records every frame in and out. */
  webSocketClass() {
    const recorder = this;
    return class RecordingWebSocket extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        const socket = ++recorder.sockets;
        recorder.frame(socket, "open", { url: String(url) });
        // Registered before the client's onmessage: runs first, even if the client throws.
        this.addEventListener("message", (event) =>
          recorder.frame(socket, "in", { data: String(event.data) }),
        );
        this.addEventListener("close", (event) =>
          recorder.frame(socket, "close", { code: event.code, reason: event.reason }),
        );
        this.addEventListener("error", (event) =>
          recorder.frame(socket, "error", { message: String(event.message) }),
        );
        this.basaltSocket = socket;
      }

      send(data, ...rest) {
        recorder.frame(this.basaltSocket, "out", { data: String(data) });
        return super.send(data, ...rest);
      }
    };
  }

  frame(socket, dir, fields) {
    const entry = { t: elapsed(), socket, dir, ...fields };
    if (entry.data !== undefined) {
      try {
        entry.msg = JSON.parse(entry.data);
        delete entry.data;
      } catch {
        // keep the raw text
      }
    }
    this.frames.push(entry);
  }

  /** Parsed messages in one direction ("in" | "out"), optionally of one type. */
  messages(dir, type) {
    return this.frames
      .filter((f) => f.dir === dir && f.msg && (type === undefined || f.msg.type === type))
      .map((f) => f.msg);
  }

  /** What happened on the sockets: how many opened, message types, closes. */
  summary() {
    const count = (dir) => {
      const counts = {};
      for (const msg of this.messages(dir)) {
        counts[msg.type] = (counts[msg.type] ?? 0) + 1;
      }
      return counts;
    };
    return {
      sockets: this.sockets,
      urls: this.frames.filter((f) => f.dir === "open").map((f) => new URL(f.url).pathname),
      in: count("in"),
      out: count("out"),
      closes: this.frames.filter((f) => f.dir === "close").map((f) => [f.code, f.reason]),
      errors: this.frames.filter((f) => f.dir === "error").map((f) => f.message),
    };
  }

  /** The frames, shortened, for a failure report. */
  tail(count = 60, width = 400) {
    return this.frames.slice(-count).map((f) => {
      const text = JSON.stringify(f);
      return text.length > width ? `${text.slice(0, width)}…` : text;
    });
  }
}

const uncaught = [];
process.on("uncaughtException", (error) => {
  uncaught.push(String(error?.stack ?? error));
  process.stderr.write(`[${elapsed()} ms] uncaught exception: ${error?.stack ?? error}\n`);
});
process.on("unhandledRejection", (error) => {
  uncaught.push(`unhandled rejection: ${error?.stack ?? error}`);
  process.stderr.write(`[${elapsed()} ms] unhandled rejection: ${error?.stack ?? error}\n`);
});

/** The things a check works with; everything it opens is closed afterwards. */
class Context {
  constructor(name) {
    this.url = env("BASALT_URL");
    this.tag = `npm-${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    this.recorder = new Recorder();
    this.clients = [];
  }

  get adminKey() {
    return env("BASALT_ADMIN_KEY");
  }

  /** A ConvexHttpClient whose logs go to the recorder. */
  http() {
    return new ConvexHttpClient(this.url, { logger: this.recorder.logger });
  }

  /** A ConvexClient on the recording `ws` WebSocket (or the bundled one if `bundled`). */
  client({ bundled = false, ...options } = {}) {
    const client = new ConvexClient(this.url, {
      logger: this.recorder.logger,
      unsavedChangesWarning: false,
      ...(bundled ? {} : { webSocketConstructor: this.recorder.webSocketClass() }),
      ...options,
    });
    this.clients.push(client);
    return client;
  }

  async close() {
    await Promise.allSettled(this.clients.map((c) => deadline(c.close(), 5000, "close()")));
  }
}

/** Run the checks named on the command line and print the result line. */
export async function main(script, checks) {
  const names = process.argv.slice(2);
  const unknown = names.filter((n) => !(n in checks));
  if (unknown.length > 0) {
    process.stderr.write(
      `${script}: unknown check(s) ${unknown.join(", ")}; known: ${Object.keys(checks).join(", ")}\n`,
    );
    process.exit(2);
  }
  const results = {};
  for (const name of names.length > 0 ? names : Object.keys(checks)) {
    const { run, timeout = 15000 } = checks[name];
    const t = new Context(name);
    const before = uncaught.length;
    const start = Date.now();
    try {
      const details = await deadline(run(t), timeout, `check ${name}`);
      const newUncaught = uncaught.slice(before);
      results[name] =
        newUncaught.length === 0
          ? { ok: true, ms: Date.now() - start, details }
          : { ok: false, error: "uncaught exception during the check", uncaught: newUncaught };
    } catch (error) {
      results[name] = {
        ok: false,
        error: String(error?.stack ?? error),
        uncaught: uncaught.slice(before),
      };
    }
    if (process.env.BASALT_FRAMES) {
      results[name].all_frames = t.recorder.frames;
    }
    if (!results[name].ok) {
      results[name].frames = t.recorder.tail();
      results[name].logs = t.recorder.logs.slice(-30);
    }
    await t.close();
  }
  const failed = Object.keys(results).filter((n) => !results[n].ok);
  for (const name of failed) {
    process.stderr.write(`${script}: check ${name} FAILED: ${results[name].error}\n`);
  }
  const line = JSON.stringify({ script, ok: failed.length === 0, results });
  // Exit explicitly: a client that failed to close must not keep the process alive.
  process.stdout.write(`${line}\n`, () => process.exit(failed.length === 0 ? 0 : 1));
}
