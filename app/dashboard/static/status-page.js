// A public status page, live: an anonymous read-only socket scoped to this page.
// Without JavaScript the server-rendered snapshot stands as it is.
// Everything user-written is set with textContent; post bodies are the server's
// safe HTML (escaped text or CommonMark without raw HTML).

const PKG = { SUBSCRIBE: 4, VIEW: 605, STATUS: 900, CHANGED: 902 };
const root = document.getElementById('status-page');
const slug = root.dataset.slug;
const topic = root.dataset.topic;
const showLatency = root.dataset.showLatency === 'true';
const OVERALL = {
  up: 'All systems operational',
  down: 'Some systems are down',
  degraded: 'Some systems are degraded',
  maintenance: 'Maintenance in progress',
};
let ws = null;
let backoff = 500;
let closed = false;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setLive(state) {
  root.dataset.live = state;
  document.getElementById('sp-live').textContent = state === 'live' ? 'live' : state === 'off' ? 'snapshot' : 'reconnecting…';
}

function pct(u) {
  return u === null || u === undefined ? '–' : `${(u * 100).toFixed(2)}%`;
}

function overallFrom() {
  const states = [...root.querySelectorAll('.sp-monitor')].map((li) => li.dataset.state);
  let word = 'unknown';
  if (states.length) {
    word = ['down', 'degraded', 'maintenance'].find((s) => states.includes(s)) || (states.includes('up') ? 'up' : 'unknown');
  }
  const p = document.getElementById('sp-overall');
  p.dataset.state = word;
  p.textContent = OVERALL[word] || 'Status unknown';
}

function monitorRow(m) {
  const li = el('li', 'sp-monitor');
  li.dataset.testid = 'sp-monitor';
  li.setAttribute('data-testid', 'sp-monitor');
  li.dataset.monitorId = String(m.id);
  li.dataset.state = m.state;
  const dot = el('span', 'sp-dot');
  dot.setAttribute('aria-hidden', 'true');
  const state = el('span', 'sp-state', m.state);
  state.setAttribute('data-testid', 'sp-state');
  li.append(dot, el('span', 'sp-name', m.name), state, el('span', 'sp-uptime', pct(m.uptime)));
  if (showLatency) li.append(el('span', 'sp-latency', m.latency_ms == null ? '' : `${Math.round(m.latency_ms)} ms`));
  return li;
}

function render(view) {
  document.getElementById('sp-title').textContent = view.title;
  document.title = view.title;
  const sections = document.getElementById('sp-sections');
  sections.replaceChildren(
    ...view.sections.map((s) => {
      const sec = el('section', 'sp-section');
      sec.setAttribute('data-testid', 'sp-section');
      const ul = el('ul');
      ul.append(...s.monitors.map(monitorRow));
      sec.append(el('h2', null, s.title), ul);
      return sec;
    }),
  );
  document.getElementById('sp-posts').replaceChildren(
    ...view.posts.map((p) => {
      const art = el('article', `sp-notice sp-sev-${p.severity}`);
      art.setAttribute('data-testid', 'sp-post');
      art.dataset.postId = String(p.id);
      const h = el('h2', null, p.title);
      if (p.resolved_at) h.append(' ', el('span', 'sp-resolved', '(resolved)'));
      const body = el('div', 'sp-body');
      body.innerHTML = p.body_html; // server-built safe HTML (app.statuspages.markdown)
      const meta = el('p', 'sp-meta');
      meta.append(el('span', 'sp-sev', p.severity), ` · ${p.created_at}`);
      art.append(h, body, meta);
      return art;
    }),
  );
  document.getElementById('sp-maintenance').replaceChildren(
    ...view.maintenance.map((w) => {
      const art = el('article', 'sp-notice sp-maint');
      art.setAttribute('data-testid', 'sp-maint');
      art.append(el('h2', null, `Maintenance: ${w.name}`));
      if (w.description) art.append(el('p', null, w.description));
      art.append(el('p', 'sp-meta', `Until ${w.ends_at} · ${w.monitors.join(', ')}`));
      return art;
    }),
  );
  document.getElementById('sp-generated').textContent = view.generated_at;
  overallFrom();
}

// req_id is a canonical UUID (protocol.md); crypto.randomUUID needs a secure context,
// getRandomValues does not (a status page may be served over plain HTTP).
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function send(pkgId, data) {
  const reqId = uuid4();
  ws.send(JSON.stringify({ pkg_id: pkgId, req_id: reqId, data }));
  return reqId;
}

function onState(data) {
  const li = root.querySelector(`.sp-monitor[data-monitor-id="${Number(data.id)}"]`);
  if (data.state === 'maintenance' || data.previous === 'maintenance' || !li) {
    send(PKG.VIEW, { newer_than: data.changed_at }); // maintenance notices and new rows come with the whole view
    return;
  }
  li.dataset.state = data.state;
  li.querySelector('.sp-state').textContent = data.state;
  const lat = li.querySelector('.sp-latency');
  if (lat && data.latency_ms != null) lat.textContent = `${Math.round(data.latency_ms)} ms`;
  overallFrom();
}

function connect() {
  if (closed) return;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  ws = new WebSocket(`${proto}//${location.host}/web?status_page=${encodeURIComponent(slug)}`, ['watchpost.v1']);
  ws.onopen = () => {
    backoff = 500;
    send(PKG.SUBSCRIBE, { topics: [topic] });
    send(PKG.VIEW, {}); // catch up with what changed since the snapshot
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.topic === topic) {
      if (msg.pkg_id === PKG.STATUS) onState(msg.data);
      else if (msg.pkg_id === PKG.CHANGED) {
        if (msg.data.action === 'page_closed') {
          closed = true;
          document.getElementById('sp-closed').hidden = false;
          setLive('off');
          ws.close();
        } else send(PKG.VIEW, msg.data.at ? { newer_than: msg.data.at } : {});
      }
      return;
    }
    if (msg.pkg_id === PKG.SUBSCRIBE && msg.status_code === 0) setLive('live');
    if (msg.pkg_id === PKG.VIEW && msg.status_code === 0) render(msg.data);
  };
  ws.onclose = (ev) => {
    if (closed) return;
    if (ev.code === 4001) {
      closed = true; // the page went away or is members only now
      document.getElementById('sp-closed').hidden = false;
      setLive('off');
      return;
    }
    setLive('reconnecting');
    setTimeout(connect, backoff + Math.random() * backoff);
    backoff = Math.min(backoff * 2, 30000);
  };
}

connect();
