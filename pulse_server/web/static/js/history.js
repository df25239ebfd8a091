// The History screen's pages and chart. The days logged are listed newest first, PAGE_SIZE to a page
// (`#history`, `#history/2`, ...): a year of entries would otherwise be 365 cards, a page 35,000 px
// long, all rebuilt at every change. Above the list, a chart of the day scores over the days the page
// covers, drawn like the reports' (docs/reports.md, "Charts"): round values up the side, Mondays dated
// along the bottom, missing days as gaps, no point on the frame.

import { addDays, daysBetween, mondayTicks, number } from './format.js';

export const PAGE_SIZE = 30;
const CHART_MIN_DAYS = 28;
const SCORE_TICKS = [0, 25, 50, 75, 100];

/** Page `asked` (1 = newest) of `entries` (newest first), clamped to the pages there are. */
export function pageOf(entries, asked) {
  const pages = Math.max(1, Math.ceil(entries.length / PAGE_SIZE));
  const page = Math.min(Math.max(1, Number.parseInt(asked, 10) || 1), pages);
  const items = entries.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
  const first = (page - 1) * PAGE_SIZE + 1;
  return { page, pages, items, first, last: first + items.length - 1, total: entries.length };
}

/** The days the chart of a page covers: from the page's oldest day to its newest (on the first page, to
 * today or a later day logged), at least the CHART_MIN_DAYS days ending there. */
export function chartDays(items, page, today) {
  const newest = items.length ? items[0].date : today;
  const end = page === 1 && newest < today ? today : newest;
  let start = items.length ? items[items.length - 1].date : end;
  if (daysBetween(start, end) < CHART_MIN_DAYS - 1) start = addDays(end, -(CHART_MIN_DAYS - 1));
  const days = [];
  for (let day = start; day <= end; day = addDays(day, 1)) days.push(day);
  return days;
}

/** The chart of the day scores over `days` (ISO dates, oldest first) as an SVG element. */
export function scoreChart(days, byDate) {
  const W = 360; const H = 196; const left = 34; const right = 14; const top = 10; const bottom = 30;
  const inset = 6; // the frame stands this far outside the first and last day and 0 and 100
  const n = days.length;
  const x = (i) => (n === 1 ? (left + W - right) / 2 : left + inset + (i * (W - left - right - 2 * inset)) / (n - 1));
  const y = (score) => H - bottom - inset - (score * (H - top - bottom - 2 * inset)) / 100;
  const points = [];
  days.forEach((date, i) => {
    const e = byDate.get(date);
    if (e && e.score !== null && e.score !== undefined) points.push({ i, date, score: Number(e.score), pending: e.pending });
  });
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('role', 'img');
  const scores = points.map((p) => p.score);
  svg.setAttribute('aria-label', points.length
    ? `Day scores on ${number(points.length)} of the ${number(n)} days from ${days[0]} to ${days[n - 1]}, `
      + `from ${number(Math.min(...scores))} to ${number(Math.max(...scores))}.`
    : `No day scores from ${days[0]} to ${days[n - 1]}.`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const level of SCORE_TICKS) {
    add('line', { class: 'grid', x1: left, x2: W - right, y1: y(level), y2: y(level) });
    add('text', { class: 'y', x: left - 5, y: y(level) + 4, 'text-anchor': 'end' }, number(level));
  }
  add('rect', { class: 'frame', x: left, y: top, width: W - left - right, height: H - top - bottom });
  const fit = Math.max(1, Math.floor((W - left - right) / 62)); // "2026-11-16" at 12 px is about 58 px
  for (const tick of mondayTicks(days, fit)) {
    add('line', { class: 'tick', x1: x(tick.index), x2: x(tick.index), y1: H - bottom, y2: H - bottom + 4 });
    if (tick.label === null) continue;
    const half = tick.label.length * 3.5; // 12 px digits are about 7 px wide
    add('text', { class: 'x', x: Math.min(Math.max(x(tick.index), half + 2), W - half - 2), y: H - 10,
      'text-anchor': 'middle' }, tick.label);
  }
  // A line joins consecutive days only: a day without a score is a gap, never a zero.
  let run = [];
  const flush = () => {
    if (run.length > 1) add('polyline', { class: 'line', points: run.map((p) => `${x(p.i)},${y(p.score)}`).join(' ') });
    run = [];
  };
  for (const p of points) {
    if (run.length && p.i !== run[run.length - 1].i + 1) flush();
    run.push(p);
  }
  flush();
  for (const p of points) {
    const dot = add('circle', { class: p.pending ? 'dot pending' : 'dot', cx: x(p.i), cy: y(p.score), r: 4.5 });
    const title = document.createElementNS(ns, 'title');
    title.textContent = `${p.date}: ${number(p.score)}${p.pending ? ' (not synced yet)' : ''}`;
    dot.append(title);
  }
  return svg;
}
