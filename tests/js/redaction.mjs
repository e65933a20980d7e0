// What the npm clients (convex 1.48.0) are told of failed calls and log lines, as an
// anonymous caller and as an admin (the `leaky` test app of tests/server/apps).
// Usage: BASALT_URL=http://127.0.0.1:PORT BASALT_ADMIN_KEY=… node redaction.mjs [check ...]

import { fn, main, settle } from "./lib.mjs";

async function calls(t, { admin }) {
  const ws = t.client();
  const http = t.http();
  if (admin) {
    ws.setAdminAuth(t.adminKey);
    http.setAdminAuth(t.adminKey);
  }
  return {
    ws: {
      query: await settle(ws.query(fn("leak:read"), {})),
      mutation: await settle(ws.mutation(fn("leak:write"), {})),
      action: await settle(ws.action(fn("leak:act"), {})),
      chatty: await settle(ws.query(fn("leak:chatty"), { text: "over ws" })),
    },
    http: {
      query: await settle(http.query(fn("leak:read"), {})),
      mutation: await settle(http.mutation(fn("leak:write"), {})),
      action: await settle(http.action(fn("leak:act"), {})),
      chatty: await settle(http.query(fn("leak:chatty"), { text: "over http" })),
    },
    // Everything the server sent on the WebSocket, and what the clients logged.
    frames: t.recorder.messages("in"),
    logs: t.recorder.logs.map((l) => l.text),
  };
}

const checks = {
  anonymous: { run: (t) => calls(t, { admin: false }) },
  admin: { run: (t) => calls(t, { admin: true }) },
};

await main("redaction", checks);
