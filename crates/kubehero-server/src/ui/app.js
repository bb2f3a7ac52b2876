// KubeHero dashboard: the only script (served from /ui/app.js; the Content-Security-Policy allows no other).
// - Forms with data-api="METHOD /path" are sent to the JSON API with the session's CSRF token; the answer (or the
//   error) is shown in the form's [data-out]; data-show names answer fields to show (once: join commands, share
//   links, codes), data-then="reload" reloads. data-confirm makes the person type a value (a cluster's name) first.
// - A 401 (the session ended mid-form) sends the person to sign in and back to this page.
// - Tables with data-poll refresh from the API every 5 s while the tab is visible, never while it is hidden.
'use strict';

const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || '';

function signInAgain() {
  location.href = '/login?return_to=' + encodeURIComponent(location.pathname + location.search);
}

function put(obj, path, value) {
  const keys = path.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] = o[k] || {};
  o[keys[keys.length - 1]] = value;
}

function pick(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function bodyOf(form) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.name === 'confirm' || el.type === 'submit' || el.type === 'button') continue;
    let v = el.value;
    if (el.type === 'checkbox') v = el.checked;
    else if (v === '') continue;
    else if (el.dataset.type === 'number') v = Number(v);
    else if (el.dataset.type === 'bool') v = v === 'true';
    else if (el.dataset.type === 'list') v = v.split(',').map((s) => s.trim()).filter(Boolean);
    else if (el.dataset.type === 'json') v = JSON.parse(v);
    put(body, el.name, v);
  }
  return body;
}

async function send(form) {
  const out = form.querySelector('[data-out]');
  const say = (text, error) => {
    if (!out) return;
    out.textContent = text;
    out.classList.toggle('error', !!error);
  };
  if (form.dataset.confirm !== undefined) {
    const typed = (form.elements.confirm || {}).value;
    if (typed !== form.dataset.confirm) {
      say('Type ' + form.dataset.confirm + ' to confirm.', true);
      return;
    }
  }
  const [method, path] = form.dataset.api.split(' ');
  const init = { method, credentials: 'same-origin', headers: { 'x-csrf-token': csrf() } };
  if (method !== 'GET' && method !== 'DELETE') {
    init.headers['content-type'] = 'application/json';
    try {
      init.body = JSON.stringify(bodyOf(form));
    } catch (e) {
      say('Not valid JSON: ' + e.message, true);
      return;
    }
  }
  say('Working…', false);
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    say('The control plane could not be reached; try again.', true);
    return;
  }
  if (r.status === 401) return signInAgain();
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    const stale = r.status === 409 && /version|changed/.test(answer.message || '');
    say(stale ? 'Someone changed this since you opened it: reload the page and apply your edit again. (' +
      answer.message + ')' : answer.message || 'Refused (' + r.status + ').', true);
    return;
  }
  if (form.dataset.show) {
    out.textContent = '';
    out.classList.remove('error');
    for (const field of form.dataset.show.split(' ')) {
      const v = pick(answer, field);
      if (v === undefined || v === null) continue;
      const pre = document.createElement('pre');
      pre.dataset.field = field;
      pre.textContent = typeof v === 'string' ? v : JSON.stringify(v, null, 2);
      out.appendChild(pre);
    }
    const note = document.createElement('p');
    note.className = 'hint';
    note.textContent = form.dataset.note || 'Shown once: copy it now.';
    out.appendChild(note);
  } else if (form.dataset.then === 'reload') {
    location.reload();
  } else if (form.dataset.then) {
    location.href = form.dataset.then;
  } else {
    say(form.dataset.done || 'Done.', false);
  }
}

document.addEventListener('submit', (e) => {
  const form = e.target.closest('form[data-api]');
  if (!form) return;
  e.preventDefault();
  send(form);
});

// Live tables.
function time(t) {
  return t ? new Date(t * 1000).toISOString().replace('.000Z', 'Z') : '—';
}

function stateText(c) {
  if (c.state === 'disconnected' && c.since) return 'disconnected since ' + time(c.since);
  return c.state;
}

async function poll(table) {
  if (document.hidden) return;
  let r;
  try {
    r = await fetch(table.dataset.poll, { credentials: 'same-origin' });
  } catch (e) {
    return;
  }
  if (r.status === 401) return signInAgain();
  if (!r.ok) return;
  const { items } = await r.json();
  for (const c of items || []) {
    const row = table.querySelector('tr[data-cluster="' + CSS.escape(c.name) + '"]');
    if (!row) continue;
    const set = (field, text, cls) => {
      const cell = row.querySelector('[data-field="' + field + '"]');
      if (!cell) return;
      cell.textContent = text;
      if (cls) cell.className = cls;
    };
    set('state', stateText(c), 'state-' + c.state);
    set('kubernetes_version', c.kubernetes_version || '—');
    set('agent_version', c.agent_version || '—');
    set('cert_not_after', time(c.cert_not_after));
    set('last_seen', time(c.last_seen));
  }
}

for (const table of document.querySelectorAll('[data-poll]')) {
  setInterval(() => poll(table), 5000);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) poll(table);
  });
}

// Client-side filter of a long table.
for (const input of document.querySelectorAll('input[data-filter]')) {
  const table = document.querySelector(input.dataset.filter);
  input.addEventListener('input', () => {
    const q = input.value.trim().toLowerCase();
    for (const row of table.querySelectorAll('tbody tr')) {
      row.hidden = q !== '' && !row.textContent.toLowerCase().includes(q);
    }
  });
}

// The audit log's live tail: server-sent events of new rows, closed while the tab is hidden or the box unticked.
for (const box of document.querySelectorAll('input[data-tail]')) {
  const body = document.querySelector('#audit tbody');
  let source = null;
  const stop = () => {
    if (source) source.close();
    source = null;
  };
  const start = () => {
    if (source || !box.checked || document.hidden || !body) return;
    source = new EventSource(box.dataset.tail);
    source.addEventListener('row', (e) => {
      const t = document.createElement('tbody');
      t.innerHTML = e.data;
      if (t.firstElementChild) body.prepend(t.firstElementChild);
    });
  };
  box.addEventListener('change', () => (box.checked ? start() : stop()));
  document.addEventListener('visibilitychange', () => (document.hidden ? stop() : start()));
}
