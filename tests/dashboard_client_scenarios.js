// Scenarios for the dashboard's JS client (app/dashboard/static/wp-client.js), evaluated in
// chromium by tests/test_dashboard_browser.py against a scripted socket. The function's
// result is checked by the Python test.
(async () => {
  const m = await import("/static/wp-client.js");
  const out = {};
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const sockets = [];
  const seq = { monitors: 5 };
  const history = [];
  let recoverable = true;
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url; this.protocols = protocols; this.readyState = 0; this.sent = [];
      sockets.push(this);
      setTimeout(() => {
        if (FakeSocket.refuseWith) { this.readyState = 3; this.onclose?.({ code: FakeSocket.refuseWith }); return; }
        this.readyState = 1; this.onopen?.();
      }, 2);
    }
    send(frame) {
      const msg = JSON.parse(frame);
      this.sent.push(msg);
      const answer = (data, status = 0) =>
        setTimeout(() => this.recv({ pkg_id: msg.pkg_id, req_id: msg.req_id, status_code: status, data }), 1);
      if (msg.pkg_id === 4 && msg.data.topics.includes("deliveries")) {
        answer({ msg: "topic 'deliveries' needs role 'editor'" }, 3);
      } else if (msg.pkg_id === 4 && msg.data.topics.includes("maintenance") && FakeSocket.silent) {
        FakeSocket.silent = false; // no answer this once: the subscription times out
      } else if (msg.pkg_id === 4) {
        const topics = {};
        for (const t of msg.data.topics) {
          const since = msg.data.since?.[t];
          const ok = since !== undefined && recoverable;
          topics[t] = { seq: seq[t] ?? 0, recovered: ok, replayed: 0 };
          // Like the server: replayed events are queued before the answer.
          if (ok) for (const e of history.filter((e) => e.topic === t && e.seq > since)) this.recv(e);
        }
        answer({ topics });
      } else if (msg.pkg_id === 98) {
        answer({ msg: "stale version", errors: [{ path: "version", msg: "stale" }] }, 5);
      } else if (msg.pkg_id !== 99) {
        answer({ echo: msg.data });
      }
    }
    close() { this.readyState = 3; }
    recv(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
    drop(code) { this.readyState = 3; this.onclose?.({ code, reason: "" }); }
  }
  const publish = (ws, topic) => {
    seq[topic] += 1;
    const e = { pkg_id: 900, req_id: null, status_code: 0, topic, seq: seq[topic], data: { n: seq[topic] } };
    history.push(e);
    if (ws) ws.recv(e);
  };
  const last = () => sockets[sockets.length - 1];

  let token = "tok1";
  let refreshes = 0;
  const client = new m.WatchpostClient({
    url: "/web", tenant: "acme", WebSocket: FakeSocket, heartbeatMs: 0,
    backoffBaseMs: 10, backoffMaxMs: 40, requestTimeoutMs: 150,
    getToken: () => token,
    refreshToken: async () => { refreshes += 1; token = "tok" + (refreshes + 1); return token; },
  });
  const states = [];
  client.onState((s, info) => states.push(info.code ? `${s}:${info.code}` : s));
  const got = [];
  const resets = [];
  client.subscribe(["monitors"], { onEvent: (e) => got.push(e.seq), onReset: (t, i) => resets.push(i.reason) });
  await client.connect();
  out.url = last().url;
  out.protocols = last().protocols;
  out.echo = await client.call(102, { page: 2 });
  try { await client.call(99, {}); } catch (e) { out.timeout = { kind: e.kind, status: e.statusCode }; }
  try { await client.call(98, {}); } catch (e) { out.conflict = { kind: e.kind, status: e.statusCode, msg: e.message, errors: e.errors.length }; }

  // Live events, then a duplicate: applied once each.
  publish(last(), "monitors"); publish(last(), "monitors");
  last().recv(history[history.length - 1]);
  await sleep(5);
  out.live = [...got];

  // Going away: two events while offline are replayed once after the reconnect.
  last().drop(1001);
  publish(null, "monitors"); publish(null, "monitors");
  await sleep(200);
  out.afterReplay = [...got];
  out.since = last().sent.find((x) => x.pkg_id === 4).data.since;

  // History lost: the subscriber is told to reload, and continues from the server's seq.
  recoverable = false;
  last().drop(1011);
  publish(null, "monitors");
  await sleep(200);
  out.resets = [...resets];
  out.positions = client.positions();

  // A seq gap on a live socket also asks for a reload.
  publish(last(), "monitors"); seq.monitors += 2; publish(last(), "monitors");
  await sleep(5);
  out.gapResets = [...resets];

  // 904: refresh through the hook, then AUTH_REFRESH in band.
  last().recv({ pkg_id: 904, req_id: null, status_code: 0, data: { expires_in: 30 } });
  await sleep(30);
  out.authRefresh = last().sent.filter((x) => x.pkg_id === 3).map((x) => x.data.token);

  // 4001: one refresh, then a reconnect carrying the new token.
  last().drop(4001);
  await sleep(100);
  out.afterAuthClose = { state: client.state, protocols: last().protocols };

  // 4010 and the refreshed token is refused too: give up (back to login).
  FakeSocket.refuseWith = 4010;
  last().drop(4010);
  await sleep(150);
  out.finalState = client.state;
  try { await client.call(1, {}); } catch (e) { out.callWhenUnauthenticated = e.kind; }
  out.states = states;

  // A refused subscription: reported to its handler, the connection stays up.
  FakeSocket.refuseWith = 0;
  const second = new m.WatchpostClient({
    WebSocket: FakeSocket, heartbeatMs: 0, backoffBaseMs: 10, backoffMaxMs: 40, requestTimeoutMs: 150,
    getToken: () => "tokB",
  });
  await second.connect();
  const socketsBefore = sockets.length;
  const refused = [];
  second.subscribe(["deliveries"], { onEvent: () => {}, onReset: (t, i) => refused.push(i.reason) });
  await sleep(30);
  out.refused = { resets: [...refused], state: second.state, sameSocket: sockets.length === socketsBefore };

  // A subscription that gets no answer: the socket is dropped and the next one subscribes again.
  FakeSocket.silent = true;
  second.subscribe(["maintenance"], () => {});
  await sleep(400);
  out.silent = {
    state: second.state,
    newSocket: sockets.length > socketsBefore,
    resubscribed: last().sent.some((x) => x.pkg_id === 4 && x.data.topics.includes("maintenance")),
  };
  // After the reconnect the refused topic did not take the good one down with it.
  await sleep(30);
  out.afterReconnect = { positions: second.positions(), refusedAgain: refused.length };
  // EVENT_ROLE_CHANGED (905) dropping a topic: listeners hear of it and the topic is forgotten
  // (not resubscribed on the next connection).
  const notices = [];
  second.onEvent((e) => { if (e.pkg_id === 905) notices.push(e.data.roles); });
  last().recv({ pkg_id: 905, req_id: null, status_code: 0, data: { roles: ["viewer"], dropped_topics: ["maintenance"] } });
  out.roleChange = { notices, positions: second.positions() };
  second.close();

  // Full jitter: uniform in [0, min(cap, base * 2^attempt)].
  out.backoffMax = [0, 1, 2, 3, 4, 5, 6, 10].map((a) => m.backoffDelay(a, 500, 20000, () => 0.999999));
  out.backoffMin = m.backoffDelay(7, 500, 20000, () => 0);
  return out;
})
