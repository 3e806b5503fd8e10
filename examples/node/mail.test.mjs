// A non-Python suite on the control API: add a fault, send mail, wait for it, read it back.
// Run against a daemon:  TESTBED_URL=http://127.0.0.1:2580 node --test examples/node/
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";

const base = (process.env.TESTBED_URL ?? "http://127.0.0.1:2580") + "/api/v1";

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  return { status: response.status, data };
}

// A minimal SMTP client (Node has none built in): one line out, one reply in, per step.
function sendMail(host, port, from, to, subject, text) {
  const steps = [null, "EHLO node.test", `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`, "DATA",
    `Subject: ${subject}\r\nFrom: ${from}\r\nTo: ${to}\r\n\r\n${text}\r\n.`, "QUIT"];
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    const codes = [];
    let buffer = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf("\r\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line[3] === "-") continue; // a multi-line reply goes on
        const code = Number(line.slice(0, 3));
        codes.push(code);
        if (code >= 400) { socket.end(); resolve(codes); return; }
        steps.shift();
        if (steps.length === 0) { socket.end(); resolve(codes); return; }
        socket.write(steps[0] + "\r\n");
      }
    });
    socket.on("error", reject);
  });
}

test("a fault set over the API fires, then the mail arrives and reads back", async (t) => {
  const session = (await api("POST", "/sessions", {})).data.id;
  t.after(() => api("DELETE", `/sessions/${session}`));
  const info = (await api("GET", "/info")).data;
  const smtp = new URL(info.listeners.find((l) => l.server === "smtp" && l.label === "smtp").url);
  const to = `alice+${session}@example.test`;

  const fault = await api("POST", `/faults?session=${session}`,
    { server: "smtp", on: "RCPT", action: "reply", code: 451, times: 1 });
  assert.equal(fault.status, 200);

  assert.equal((await sendMail(smtp.hostname, Number(smtp.port), "app@example.test", to, "hi", "x")).at(-1), 451);
  const waiting = api("GET", `/wait?session=${session}&kind=stored&server=smtp&to=${encodeURIComponent(to)}&timeout=10`);
  const codes = await sendMail(smtp.hostname, Number(smtp.port), "app@example.test", to, "from node", "hello");
  assert.equal(codes.at(-1), 221);
  const waited = await waiting;
  assert.equal(waited.status, 200);
  assert.deepEqual(waited.data.events[0].rcpt, [to]);

  const latest = await api("GET", `/mail/users/${encodeURIComponent(to)}/messages/latest`);
  assert.equal(latest.data.subject, "from node");
  assert.match(latest.data.text, /hello/);
  const stats = await api("GET", `/faults/stats?session=${session}`);
  assert.equal(stats.data.fired, 1);
});
