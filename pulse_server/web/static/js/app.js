// The screens: sign in, today, log a day, history, sync. Everything shown comes from the local view
// (sync.js); every write goes to the outbox first. A tab whose account was signed out or replaced in
// another tab shows only a notice (the `locked` screen); a new version is applied when nothing would be
// lost (updates.js).

import { AccountChanged, Engine, isHeld } from './sync.js';
import { fieldWarnings, plain } from './score.js';
import { previousWeight } from './replica.js';
import { Updates, justUpdated } from './updates.js';
import { parseDate, parseFields, ValidationError } from './values.js';
import { dateTime, number } from './format.js';
import { chartDays, pageOf, scoreChart } from './history.js';

const FIELDS = ['sleep_hours', 'hrv_ms', 'hrv_method', 'steps', 'weight_kg', 'note'];
const NUMERIC = ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg'];
const LABELS = { sleep_hours: 'Sleep', hrv_ms: 'HRV', steps: 'Steps', weight_kg: 'Weight', note: 'Note' };
const UNITS = { sleep_hours: ' h', hrv_ms: ' ms', steps: '', weight_kg: ' kg', note: '' };
const SCREENS = ['signin', 'today', 'log', 'history', 'sync', 'locked'];
const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

const $ = (id) => document.getElementById(id);
const engine = new Engine();
const updates = new Updates();
let loaded = {}; // the values the log form opened with, as shown
let fixing = null; // the rejected mutation the log form is fixing
let routedFor = null; // the account (and lock) the screens were routed for
let working = 0; // saves, sign-ins and sign-outs under way
let interacted = false; // the person has used this page since it loaded
let allConflicts = false; // the Sync screen lists every conflict, not only the open ones
let historyPage = 1; // the page of the History screen shown (#history/<n>)
let shownScreen = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// As the log form holds it (the CLI's grammar: 7.5), and as the screens show it (the browser's locale).
const shown = (name, value) => (value === null || value === undefined ? '' :
  (NUMERIC.includes(name) ? plain(value) : String(value)));
const display = (name, value) => (NUMERIC.includes(name) ? number(value) : shown(name, value));

function describe(entry) {
  const parts = [];
  for (const name of ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg']) {
    if (entry[name] === null || entry[name] === undefined) continue;
    let text = `${LABELS[name]} ${display(name, entry[name])}${UNITS[name]}`;
    if (name === 'hrv_ms' && entry.hrv_method) text += ` (${entry.hrv_method.toUpperCase()})`;
    parts.push(text);
  }
  return parts.join(' · ');
}

function visibleEntries() {
  return [...engine.view.values()].filter((e) => !e.deleted).sort((a, b) => (a.date < b.date ? 1 : -1));
}

// -- routing ------------------------------------------------------------------------------------
const accountKey = () => (engine.locked ? 'locked' : `${engine.token ? engine.username : ''}`);

function route() {
  const [name, arg] = location.hash.replace(/^#/, '').split('/');
  routedFor = accountKey();
  const signedIn = Boolean(engine.token);
  // Signed in with a token the server refused: the data and the queue stay; signing in again resumes.
  const again = signedIn && engine.needsSignIn && name === 'signin';
  let screen = !signedIn || again ? 'signin' : (SCREENS.includes(name) && !['signin', 'locked'].includes(name) ? name : 'today');
  if (engine.locked) screen = 'locked';
  if (screen === 'signin') {
    $('signin-title').textContent = again ? 'Sign in again' : 'Sign in';
    if (again && !$('signin-username').value) $('signin-username').value = engine.username || '';
    renderKept();
  }
  if (screen === 'locked') renderLocked();
  const turned = screen === 'history' && shownScreen === 'history' && historyPage !== (Number.parseInt(arg, 10) || 1);
  if (screen === 'history') historyPage = Number.parseInt(arg, 10) || 1;
  for (const s of SCREENS) $(`screen-${s}`).hidden = s !== screen;
  $('loading').hidden = true;
  $('tabs').hidden = !signedIn || screen === 'locked';
  for (const a of $('tabs').querySelectorAll('a')) {
    if (a.getAttribute('href') === `#${screen}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (screen === 'log') {
    openLog(arg || engine.today(), fixing ? valuesOf(fixing) : null);
    const error = fixing?.result?.error;
    if (error) showError({ field: error.field, message: error.message });
  }
  render();
  if (turned) $('history-position').focus(); // a new page: read out where it is, from its top
  shownScreen = screen;
  return screen;
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** The account changed under this tab (another tab signed in or out): show what is true now. */
function accountChanged() {
  if (engine.locked) {
    route();
    $('locked-title').focus();
  } else if (engine.token) {
    go(location.hash.startsWith('#signin') || location.hash.startsWith('#locked') ? '#today' : location.hash);
  } else {
    route();
  }
}

// -- rendering ----------------------------------------------------------------------------------
function render() {
  renderPill();
  renderUpdate();
  if (engine.locked) {
    forgetScreens();
    renderLocked();
    return;
  }
  if (!engine.token) return;
  renderToday();
  renderHistory();
  renderSync();
}

function counts() {
  const held = engine.outbox.filter(isHeld).length;
  const pending = engine.outbox.filter((m) => m.status === 'pending').length - held;
  const rejected = engine.outbox.filter((m) => m.status === 'rejected').length;
  return { pending, held, rejected, conflicts: engine.openConflicts() };
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

function renderPill() {
  const pill = $('sync-pill');
  if (engine.locked) { pill.textContent = 'This tab stopped'; pill.className = 'pill attention'; return; }
  if (!engine.token) { pill.textContent = navigator.onLine ? 'Online' : 'Offline'; pill.className = 'pill'; return; }
  const { pending, held, rejected, conflicts } = counts();
  const queued = plural(pending, 'change queued', 'changes queued');
  let text;
  let cls = 'pill';
  if (engine.needsSignIn) { text = 'Sign in again to sync'; cls += ' attention'; }
  else if (!engine.online) { text = `Offline · ${pending ? queued : 'all saved here'}`; cls += ' offline'; }
  else if (engine.lastError || engine.pullError || engine.exchangeError || engine.serverError) { text = `Online · sync error${pending ? ` · ${queued}` : ''}`; cls += ' attention'; }
  else if (pending) text = `Online · ${engine.syncing ? 'syncing' : queued}`;
  else text = 'Online · synced';
  if (held) text += ` · ${held} held until ${held === 1 ? 'its date' : 'their dates'}`;
  if (rejected) { text += ` · ${rejected} rejected`; cls = 'pill attention'; }
  if (conflicts) text += ` · ${plural(conflicts, 'conflict', 'conflicts')}`;
  if (pill.textContent !== text) pill.textContent = text;
  pill.className = cls;
  const badge = $('sync-badge');
  badge.hidden = !rejected;
  badge.textContent = String(rejected);
}

function renderToday() {
  const today = engine.today();
  const entry = engine.view.get(today);
  const live = entry && !entry.deleted ? entry : null;
  $('today-title').textContent = `Today, ${today}`;
  $('today-score').textContent = live?.score != null ? number(live.score) : '–';
  $('today-score-label').textContent = live?.score != null
    ? `Day score (out of 100)${live.pending ? ', not synced yet' : ''}`
    : 'No score yet: log sleep and steps for today.';
  const warnings = $('today-warnings');
  warnings.replaceChildren();
  if (live && engine.rules) {
    const values = Object.fromEntries(NUMERIC.map((n) => [n, live[n]]));
    const previous = previousWeight(engine.view, today);
    for (const w of fieldWarnings(engine.rules, values, previous, today)) warnings.append(el('li', {}, w.message));
  }
  const dl = $('today-values');
  dl.replaceChildren();
  for (const name of ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg', 'note']) {
    let value = live ? display(name, live[name]) : '';
    if (value && name === 'hrv_ms' && live.hrv_method) value += ` ms (${live.hrv_method.toUpperCase()})`;
    else if (value) value += UNITS[name];
    dl.append(el('dt', {}, LABELS[name]), el('dd', {}, value || 'not logged'));
  }
  $('today-log').textContent = live ? 'Edit today' : 'Log today';
  $('today-log').setAttribute('href', `#log/${today}`);
}

function renderHistory() {
  const { page, pages, items, first, last, total } = pageOf(visibleEntries(), historyPage);
  const days = chartDays(items, page, engine.today());
  $('history-chart').replaceChildren(scoreChart(days, engine.view));
  $('history-caption').textContent = `Day score, ${days[0]} to ${days[days.length - 1]}. `
    + 'Open circles are not synced yet.';
  const list = $('history-list');
  list.replaceChildren();
  for (const e of items) {
    const head = el('div', { class: 'head' },
      el('span', { class: 'date' }, e.date),
      el('span', {}, e.score != null ? `Score ${number(e.score)}` : 'No score'),
      e.pending ? el('span', { class: 'tag' }, 'not synced') : null,
      el('a', { href: `#log/${e.date}`, class: 'edit', 'aria-label': `Edit ${e.date}` }, 'Edit'));
    list.append(el('li', { 'data-date': e.date }, head,
      el('p', { class: 'facts' }, describe(e) || 'no values'),
      e.note ? el('p', { class: 'facts' }, `Note: ${e.note}`) : null));
  }
  $('history-empty').hidden = total > 0;
  $('history-position').hidden = total === 0;
  $('history-position').textContent = pages === 1
    ? `${number(total)} ${total === 1 ? 'day' : 'days'} logged, newest first.`
    : `Newest first: days ${number(first)} to ${number(last)} of ${number(total)} (page ${number(page)} of ${number(pages)}).`;
  $('history-pages').hidden = pages === 1;
  pageLink($('history-newer'), page > 1 ? page - 1 : null);
  pageLink($('history-older'), page < pages ? page + 1 : null);
}

/** A link to another page of the history, or the same link disabled (kept in place, not focusable). */
function pageLink(link, page) {
  if (page === null) {
    link.removeAttribute('href');
    link.setAttribute('aria-disabled', 'true');
  } else {
    link.setAttribute('href', page === 1 ? '#history' : `#history/${page}`);
    link.removeAttribute('aria-disabled');
  }
}

function when(ms) {
  return ms ? dateTime(ms) : 'never';
}

function renderSync() {
  const { pending, held, rejected, conflicts } = counts();
  const dl = $('sync-state');
  dl.replaceChildren();
  const rows = [
    ['Signed in as', engine.username || ''],
    ['Connection', engine.needsSignIn ? 'sign in again to sync' : (engine.online ? 'online' : 'offline')],
    ['Waiting to sync', number(pending)],
    ['Held until their date', number(held)],
    ['Rejected', number(rejected)],
    ['Open conflicts', number(conflicts)],
    ['Last sync', when(engine.meta.lastSyncMs)],
    ['App version', updates.version || 'not installed'],
    ['Device id', engine.meta.clientId || ''],
  ];
  if (engine.meta.clockOffsetMs) rows.push(['Clock offset', `${number(engine.meta.clockOffsetMs)} ms`]);
  for (const [k, v] of rows) dl.append(el('dt', {}, k), el('dd', {}, v));
  const clock = engine.clockNotice();
  $('sync-clock').hidden = !clock;
  $('sync-clock').textContent = clock || '';
  const former = engine.meta.formerClientIds || [];
  $('sync-identity').hidden = !former.length;
  $('sync-identity').textContent = former.length
    ? `This browser's data was also used by another browser under the same device id (a copied or restored `
      + `profile): it now syncs as a new device. Nothing was lost. Earlier ids: ${former.join(', ')}.`
    : '';
  $('sync-error').textContent = engine.needsSignIn
    ? 'The server refused the saved sign-in: sign in again to sync. Your queued changes are kept.'
    : [engine.lastError, engine.serverError, engine.pullError, engine.exchangeError].filter(Boolean).join(' ');
  $('sync-signin').hidden = !engine.needsSignIn;

  const list = $('rejected-list');
  list.replaceChildren();
  for (const m of engine.outbox.filter((x) => x.status === 'rejected').sort((a, b) => a.seq - b.seq)) {
    const what = m.op === 'delete' ? 'Delete the day' : describe(m.fields) || (m.fields.note ? `Note: ${m.fields.note}` : 'clear values');
    list.append(el('li', { 'data-seq': String(m.seq) },
      el('strong', {}, m.date), ` ${what}`,
      el('p', { class: 'message' }, m.result?.error?.message || 'refused by the server'),
      el('div', { class: 'actions' },
        m.op === 'set' ? el('button', { type: 'button', class: 'secondary', onclick: () => fix(m) }, 'Fix') : null,
        el('button', { type: 'button', class: 'danger', onclick: () => discard(m) }, 'Discard'))));
  }
  if (!list.children.length) list.append(el('li', { class: 'muted' }, 'None.'));

  const heldList = $('held-list');
  heldList.replaceChildren();
  for (const m of engine.outbox.filter(isHeld).sort((a, b) => a.seq - b.seq)) {
    const what = m.op === 'delete' ? 'Delete the day' : describe(m.fields) || (m.fields.note ? `Note: ${m.fields.note}` : 'clear values');
    heldList.append(el('li', { 'data-seq': String(m.seq) },
      el('strong', {}, m.date), ` ${what}`,
      el('p', { class: 'facts' }, `Held until its date: ${m.result?.error?.message || 'dated ahead of your today'}`)));
  }
  $('held').hidden = !held;
  renderConflicts();
}

const CONFLICT_STATES = {
  open: 'Open: the kept value stands',
  reasserted: 'Re-asserted: the value that lost was set again',
  superseded: 'Superseded: a later edit replaced both',
  dismissed: 'Dismissed',
};

/** A conflict's value as shown: "7000", "62 ms (RMSSD)", "empty". */
function conflictValue(field, value) {
  if (value && typeof value === 'object') {
    if (value.hrv_ms === null || value.hrv_ms === undefined) return 'empty';
    return `${display('hrv_ms', value.hrv_ms)} ms${value.hrv_method ? ` (${value.hrv_method.toUpperCase()})` : ''}`;
  }
  if (value === null || value === undefined || value === '') return 'empty';
  return `${display(field, value)}${UNITS[field] || ''}`;
}

function renderConflicts() {
  const list = $('conflicts-list');
  list.replaceChildren();
  const all = engine.conflicts();
  const toggle = $('conflicts-all');
  toggle.setAttribute('aria-pressed', String(allConflicts));
  toggle.textContent = allConflicts ? 'Show open ones only' : `Show all (${all.length})`;
  toggle.hidden = all.length === 0;
  for (const c of all.filter((x) => allConflicts || x.state === 'open')) {
    // The buttons are described by their conflict (not named after it: a field's name in a button's
    // name would make it a second "label" of that field).
    const about = `conflict-${c.id}`;
    list.append(el('li', { 'data-conflict': String(c.id), 'data-state': c.state },
      el('strong', { id: `${about}-what` }, `${c.date} · ${LABELS[c.field] || c.field}`),
      el('p', { class: 'facts', id: `${about}-values` },
        `kept ${conflictValue(c.field, c.kept)} over ${conflictValue(c.field, c.lost)}`),
      el('p', { class: `state ${c.state}` }, CONFLICT_STATES[c.state] || c.state),
      el('div', { class: 'actions' },
        ['open', 'superseded'].includes(c.state) ? el('button', { type: 'button', class: 'secondary',
          'aria-describedby': `${about}-what ${about}-values`, onclick: () => reassert(c) }, 'Re-assert') : null,
        c.state !== 'dismissed' ? el('button', { type: 'button', class: 'secondary',
          'aria-describedby': `${about}-what ${about}-values`, onclick: () => dismissConflict(c) }, 'Dismiss') : null)));
  }
  if (!list.children.length) list.append(el('li', { class: 'muted' }, allConflicts ? 'None.' : 'No open conflicts.'));
}

/** Log the value that lost as a new edit, which is later than the winner and so wins (as the CLI's
 * `pulse conflicts --reassert`), checked like a value typed in the form. */
async function reassert(conflict) {
  const lost = conflict.field === 'hrv_ms' && conflict.lost && typeof conflict.lost === 'object'
    ? conflict.lost : { [conflict.field]: conflict.lost };
  const typed = {};
  const cleared = [];
  for (const [name, value] of Object.entries(lost)) {
    if (value === null || value === undefined) { if (name !== 'hrv_method') cleared.push(name); }
    else typed[name] = String(value);
  }
  let fields;
  try {
    fields = parseFields(engine.rules, typed);
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    $('sync-error').textContent = error.message;
    return;
  }
  for (const name of cleared) fields[name] = null;
  if (cleared.includes('hrv_ms')) fields.hrv_method = null;
  await stillOurs(() => engine.write(conflict.date, 'set', fields));
}

async function dismissConflict(conflict) {
  await stillOurs(() => engine.dismissConflict(conflict.id));
}

/**
 * Run a write of this tab's account; false if the account is no longer the signed-in one (the tab
 * stopped, and its notice says so instead), or if this device's storage refused the write (said at
 * the top of every screen until a write goes through: never a save that silently did not happen).
 */
async function stillOurs(work) {
  working += 1;
  try {
    await work();
    showWriteError(null);
    return true;
  } catch (error) {
    if (error instanceof AccountChanged) return false;
    console.warn('could not write on this device', error); // shown on the page too
    showWriteError(`Not saved: this device's storage refused the change (${error?.name || 'Error'}: `
      + `${error?.message || error}). Try again; if it keeps failing, free some space or reload the page.`);
    return false;
  } finally {
    working -= 1;
  }
}

function showWriteError(text) {
  const notice = $('write-error');
  notice.textContent = text || '';
  notice.hidden = !text;
}

/** A stopped tab keeps nothing of its account in the page, not even in the hidden screens. */
function forgetScreens() {
  if (document.documentElement.dataset.forgotten === 'true') return;
  document.documentElement.dataset.forgotten = 'true';
  fixing = null;
  loaded = {};
  $('log-form').reset();
  clearErrors();
  renderToday(); // the engine's view is empty now: these render empty screens
  renderHistory();
  renderSync();
}

function renderLocked() {
  const { was, now } = engine.locked;
  let title;
  let message;
  if (now && now !== was) {
    title = `Signed in as ${now} in another tab`;
    message = `This tab was showing ${was}'s data. It has stopped and no longer shows it: nothing done here `
      + `is saved. Reload to continue as ${now}.`;
  } else if (!now) {
    title = `${was} signed out in another tab`;
    message = `This tab has stopped and no longer shows ${was}'s data: nothing done here is saved. Reload to sign in.`;
  } else {
    title = 'Signed in again in another tab';
    message = `This tab stopped when ${was}'s data on this device changed in another tab: nothing done here is `
      + 'saved. Reload to continue.';
  }
  $('locked-title').textContent = title;
  $('locked-message').textContent = message;
  $('locked-reload').textContent = now && now !== was ? `Continue as ${now}` : 'Reload';
}

// -- the log form -------------------------------------------------------------------------------
function clearErrors() {
  for (const name of ['date', ...FIELDS]) {
    $(`e-${name}`).textContent = '';
    $(`f-${name}`).removeAttribute('aria-invalid');
  }
  $('log-status').textContent = '';
  $('log-status').className = 'status';
}

function showError(error) {
  showErrors([error]);
}

/** Each error at its field, all of them in the status line, and focus on the first field to fix. */
function showErrors(errors) {
  const fields = errors.map((error) => (FIELDS.includes(error.field) || error.field === 'date' ? error.field : 'sleep_hours'));
  errors.forEach((error, i) => {
    const message = $(`e-${fields[i]}`);
    message.textContent = message.textContent ? `${message.textContent} ${error.message}` : error.message;
    $(`f-${fields[i]}`).setAttribute('aria-invalid', 'true');
  });
  $('log-status').textContent = errors.length === 1 ? errors[0].message
    : `${errors.length} fields need fixing: ${errors.map((e) => e.message).join(' · ')}`;
  $('log-status').className = 'status bad';
  $(`f-${fields[0]}`).focus();
}

/** Every field's error, each checked on its own as the CLI would check it (HRV with its method), in the
 * form's order: the date, then FIELDS. parseFields stops at the first; a person fixes them all at once. */
function fieldErrors(typed) {
  const errors = [];
  const check = (work) => {
    try {
      work();
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      errors.push(error);
    }
  };
  check(() => parseDate(engine.rules, $('f-date').value, engine.today()));
  for (const name of FIELDS.filter((n) => n !== 'hrv_method' && n in typed)) {
    check(() => parseFields(engine.rules, name === 'hrv_ms'
      ? { hrv_ms: typed.hrv_ms, hrv_method: typed.hrv_method } : { [name]: typed[name] }));
  }
  return errors;
}

function openLog(date, values = null) {
  clearErrors();
  const input = $('f-date');
  input.value = date;
  dateHint();
  const tomorrow = new Date(Date.parse(engine.today() + 'T00:00:00Z') + 86_400_000).toISOString().slice(0, 10);
  input.max = tomorrow;
  const entry = engine.view.get(date);
  const live = entry && !entry.deleted ? entry : null;
  loaded = {};
  for (const name of FIELDS) loaded[name] = name === 'hrv_method' ? (live?.hrv_method || 'rmssd') : shown(name, live?.[name]);
  const fill = values || loaded;
  for (const name of FIELDS) $(`f-${name}`).value = fill[name] ?? (name === 'hrv_method' ? 'rmssd' : '');
  $('log-delete').hidden = !live;
  $('log-title').textContent = fixing ? `Fix the change for ${date}` : (live ? `Edit ${date}` : 'Log a day');
  if (engine.rules) {
    for (const name of NUMERIC) $(`h-${name}`).textContent = `Allowed ${engine.rules.limits[name].allowed}`;
  }
}

/** The day chosen, in the app's one date style: the date field itself is drawn by the browser in its
 * locale's (12/04/2026 in en-US). */
function dateHint() {
  const value = $('f-date').value;
  const day = /^\d{4}-\d{2}-\d{2}$/.test(value) ? WEEKDAYS[new Date(`${value}T00:00:00Z`).getUTCDay()] : '';
  $('h-date').textContent = day ? `${day} ${value}` : '';
}

/** What the user changed: typed text for the validator, plus the fields emptied (cleared). */
function changes() {
  const typed = {};
  const cleared = [];
  for (const name of ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg', 'note']) {
    const value = $(`f-${name}`).value;
    if (value === loaded[name] && !fixing) continue;
    if (value === '') { if (loaded[name] !== '') cleared.push(name); }
    else typed[name] = value;
  }
  const method = $('f-hrv_method').value;
  if ((method !== loaded.hrv_method || fixing) && $('f-hrv_ms').value !== '') typed.hrv_ms = $('f-hrv_ms').value;
  if ('hrv_ms' in typed) typed.hrv_method = method;
  return { typed, cleared };
}

async function saveLog(event) {
  event.preventDefault();
  clearErrors();
  if (!engine.rules) {
    showError({ field: 'date', message: 'The rules have not been loaded yet: connect once to sign in.' });
    return;
  }
  const { typed, cleared } = changes();
  const errors = fieldErrors(typed);
  if (errors.length) { showErrors(errors); return; }
  const date = parseDate(engine.rules, $('f-date').value, engine.today());
  const fields = parseFields(engine.rules, typed);
  for (const name of cleared) fields[name] = null;
  if (cleared.includes('hrv_ms')) fields.hrv_method = null;
  const current = engine.view.get(date);
  const live = current && !current.deleted ? current : null;
  const same = (name) => {
    const a = live?.[name] ?? null;
    const b = fields[name] ?? null;
    if (a === null || b === null) return a === b;
    return NUMERIC.includes(name) ? plain(a) === plain(b) : String(a) === String(b);
  };
  if (!fixing) {
    for (const name of ['sleep_hours', 'steps', 'weight_kg', 'note']) if (name in fields && same(name)) delete fields[name];
    if ('hrv_ms' in fields && same('hrv_ms') && same('hrv_method')) { delete fields.hrv_ms; delete fields.hrv_method; }
  }
  if (!Object.keys(fields).length) {
    $('log-status').textContent = 'Nothing changed.';
    return;
  }
  const previous = previousWeight(engine.view, date);
  const warnings = fieldWarnings(engine.rules, fields, previous, date).map((w) => w.message);
  if (!(await stillOurs(async () => {
    await engine.write(date, 'set', fields, fixing ? fixing.seq : null);
    fixing = null;
  }))) return;
  openLog(date);
  const where = engine.online ? 'Saved.' : 'Saved on this device; it will sync when you are online.';
  $('log-status').textContent = [where, ...warnings].join(' ');
}

async function deleteDay() {
  const date = $('f-date').value;
  if (!confirm(`Delete everything logged for ${date}?`)) return;
  if (await stillOurs(() => engine.write(date, 'delete'))) go('#history');
}

/** The form's values for a rejected mutation: what it tried to set, as typed text. */
function valuesOf(mutation) {
  const values = {};
  for (const name of FIELDS) {
    const v = mutation.fields[name];
    values[name] = v === null || v === undefined ? (name === 'hrv_method' ? 'rmssd' : '') : String(v);
  }
  return values;
}

function fix(mutation) {
  fixing = mutation;
  go(`#log/${mutation.date}`);
}

async function discard(mutation) {
  if (!(await stillOurs(() => engine.discard(mutation.seq)))) return;
  $('sync-error').textContent = '';
  render();
}

// -- validation as you go: one field at a time, on leaving it -------------------------------------
function checkField(name) {
  if (!engine.rules) return;
  const value = $(`f-${name}`).value;
  $(`e-${name}`).textContent = '';
  $(`f-${name}`).removeAttribute('aria-invalid');
  if (value === '' || value === loaded[name]) return;
  try {
    if (name === 'date') parseDate(engine.rules, value, engine.today());
    else parseFields(engine.rules, { [name]: value });
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    $(`e-${name}`).textContent = error.message;
    $(`f-${name}`).setAttribute('aria-invalid', 'true');
  }
}

// -- sign in and out ----------------------------------------------------------------------------
/** A modal question; resolves with the value of the button chosen, or 'cancel' (Escape). */
function ask({ title, message, actions }) {
  const dialog = $('ask');
  $('ask-title').textContent = title;
  $('ask-message').textContent = message;
  $('ask-actions').replaceChildren(...actions.map(([value, label, cls]) => el('button', { value, class: cls || '' }, label)));
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue || 'cancel'), { once: true });
    dialog.showModal();
  });
}

/** "1 change has", "3 changes of ana have". */
const changesText = (n, owner = '') => `${n === 1 ? '1 change' : `${n} changes`}${owner ? ` of ${owner}` : ''} ${n === 1 ? 'has' : 'have'}`;

async function signIn(event) {
  event.preventDefault();
  const username = $('signin-username').value.trim();
  const password = $('signin-password').value;
  const error = $('signin-error');
  error.textContent = '';
  if (!username || !password) { error.textContent = 'Enter your username and password.'; return; }
  const button = event.submitter || $('signin-form').querySelector('button');
  button.disabled = true;
  working += 1;
  try {
    const auth = await engine.authenticate(username, password);
    // Someone else is signed in here with changes the server has not seen: theirs, unless discarded.
    const current = await engine.signedInAccount();
    let keep = true;
    if (current && current.username !== auth.username && current.unsynced) {
      const who = current.username;
      const choice = await ask({
        title: `${who} has changes that are not synced`,
        message: `${changesText(current.unsynced)} not reached the server. Keep them on this device for ${who}: `
          + `they are sent when ${who} signs in here again. Or discard them: they are lost.`,
        actions: [['keep', `Keep them for ${who} and sign in`], ['discard', 'Discard them and sign in', 'danger'],
          ['cancel', 'Cancel', 'secondary']],
      });
      if (choice === 'cancel') return;
      keep = choice === 'keep';
    }
    await engine.adopt(auth, { keep });
    $('signin-password').value = '';
    go('#today');
    $('main').focus();
  } catch (e) {
    error.textContent = e.message;
  } finally {
    working -= 1;
    button.disabled = false;
  }
}

async function signOut() {
  const { pending, rejected } = counts();
  const waiting = pending + rejected;
  let keep = false;
  if (waiting) {
    const choice = await ask({
      title: 'Sign out with changes that are not synced?',
      message: `${changesText(waiting)} not reached the server. Keep them on this device until you sign in `
        + 'here again (then they are sent), or discard them: they are lost.',
      actions: [['keep', 'Keep them and sign out'], ['discard', 'Discard them and sign out', 'danger'],
        ['cancel', 'Cancel', 'secondary']],
    });
    if (choice === 'cancel') return;
    keep = choice === 'keep';
  }
  working += 1;
  try {
    await engine.signOut({ keep });
  } finally {
    working -= 1;
  }
  go('#signin');
}

/** The sign-in screen lists accounts whose unsynced changes wait on this device. */
async function renderKept() {
  const kept = engine.device ? await engine.keptAccounts() : [];
  const list = $('kept-list');
  list.replaceChildren();
  for (const k of kept.sort((a, b) => (a.username < b.username ? -1 : 1))) {
    const count = k.unsynced === 1 ? '1 change' : `${k.unsynced} changes`;
    list.append(el('li', { 'data-username': k.username },
      el('span', { class: 'who' }, k.username), ` · ${count} not synced`,
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'secondary', onclick: () => {
          $('signin-username').value = k.username;
          $('signin-password').focus();
        } }, `Sign in as ${k.username}`),
        el('button', { type: 'button', class: 'danger', onclick: () => discardKept(k) }, 'Discard'))));
  }
  $('kept').hidden = kept.length === 0;
}

async function discardKept(kept) {
  const choice = await ask({
    title: `Discard ${kept.username}'s changes?`,
    message: `${changesText(kept.unsynced, kept.username)} not reached the server. Discarded, they are lost.`,
    actions: [['discard', 'Discard them', 'danger'], ['cancel', 'Cancel', 'secondary']],
  });
  if (choice !== 'discard') return;
  await engine.discardKept(kept.username);
  renderKept();
}

// -- new versions -------------------------------------------------------------------------------
/** Would reloading now lose anything? Typed input, a question open, work under way, or (once the page
 * has been used) changes still on their way to the server. */
function busy() {
  if (engine.locked || working > 0 || $('ask').open || fixing) return true;
  if (!$('screen-log').hidden && FIELDS.some((name) => $(`f-${name}`).value !== (loaded[name] ?? ''))) return true;
  if (!$('screen-signin').hidden && $('signin-password').value) return true;
  return interacted && counts().pending > 0;
}

function renderUpdate() {
  if (updates.ready && !updates.applying && !busy()) { updates.apply(); return; }
  const banner = $('update-banner');
  if (updates.applying) {
    $('update-text').textContent = 'Starting the new version…';
    $('update-now').hidden = true;
    banner.hidden = false;
  } else if (updates.ready) {
    $('update-text').textContent = 'A new version of NGX Pulse is ready. It starts when you go to another screen.';
    $('update-now').hidden = false;
    banner.hidden = false;
  } else if (banner.dataset.updated === 'true') {
    $('update-text').textContent = 'NGX Pulse was updated to its latest version.';
    $('update-now').hidden = true;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

// -- start --------------------------------------------------------------------------------------
async function main() {
  $('signin-form').addEventListener('submit', signIn);
  $('log-form').addEventListener('submit', saveLog);
  $('log-delete').addEventListener('click', deleteDay);
  $('signout').addEventListener('click', signOut);
  $('sync-now').addEventListener('click', () => { engine.reachable = true; engine.resume(); });
  $('conflicts-all').addEventListener('click', () => { allConflicts = !allConflicts; renderConflicts(); });
  $('f-date').addEventListener('input', dateHint);
  $('f-date').addEventListener('change', () => {
    // Another day: its values fill the form, unless something was typed already (then that stays).
    const typed = Object.fromEntries(FIELDS.map((name) => [name, $(`f-${name}`).value]));
    const edited = fixing || FIELDS.some((name) => typed[name] !== loaded[name]);
    fixing = null;
    openLog($('f-date').value || engine.today(), edited ? typed : null);
  });
  for (const name of ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg', 'note']) {
    // Not when leaving for a button: the message would move the button away under the pointer, and
    // saving checks everything anyway.
    $(`f-${name}`).addEventListener('blur', (event) => {
      if (!(event.relatedTarget instanceof HTMLButtonElement)) checkField(name);
    });
  }
  addEventListener('hashchange', () => {
    if (!location.hash.startsWith('#log')) fixing = null;
    // A new version starts on the next navigation (what the form held is left behind by the move anyway).
    if (updates.ready && !engine.locked && !fixing && working === 0 && !$('ask').open) { updates.apply(); return; }
    $('update-banner').dataset.updated = 'false';
    route();
  });
  addEventListener('online', render);
  addEventListener('offline', render);
  for (const type of ['pointerdown', 'keydown']) addEventListener(type, () => { interacted = true; }, { capture: true });
  $('locked-reload').addEventListener('click', () => location.reload());
  $('update-now').addEventListener('click', () => updates.apply());
  $('update-banner').dataset.updated = String(justUpdated());
  let pendingRender = false;
  engine.addEventListener('change', () => {
    if (accountKey() !== routedFor && routedFor !== null) { accountChanged(); return; }
    if (!$('screen-signin').hidden && engine.token && !engine.needsSignIn) { go('#today'); return; }
    if (pendingRender) return;
    pendingRender = true;
    requestAnimationFrame(() => { pendingRender = false; render(); });
  });
  updates.addEventListener('ready', render);
  updates.addEventListener('version', render);
  await engine.start();
  route();
  document.documentElement.dataset.ready = 'true';
  updates.start();
}

window.pulse = { engine, updates }; // for the browser tests and for a curious person with devtools
main().catch((error) => {
  $('loading').hidden = false;
  $('loading').textContent = `NGX Pulse could not start: ${error.message}`;
});
