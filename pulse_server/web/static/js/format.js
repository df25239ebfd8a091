// How the screens write numbers and times. Numbers in the browser's own locale (Intl.NumberFormat:
// 9,100 in en-US, 9.100 in de-DE, 9 100 in fr-FR); dates and times in one style everywhere, ISO 8601
// (2026-12-04, 2026-12-04 07:05), like every date the app and the CLI show. What the log form holds
// stays as typed (7.5): it is checked by the same grammar as the CLI's (values.js), which is not the
// locale's.

const NUMBERS = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

/** A stored or typed value ("9100", "7.50", 62) as the browser's locale writes it; '' for none. */
export function number(value) {
  if (value === null || value === undefined || value === '') return '';
  const n = Number(value);
  return Number.isFinite(n) ? NUMBERS.format(n) : String(value);
}

const two = (n) => String(n).padStart(2, '0');

/** A moment (epoch milliseconds) as the browser's local date and time: "2026-12-04 07:05". */
export function dateTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

const DAY_MS = 86_400_000;
export const dayMs = (iso) => Date.parse(`${iso}T00:00:00Z`);
export const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
export const addDays = (iso, days) => isoDay(dayMs(iso) + days * DAY_MS);
export const daysBetween = (from, to) => Math.round((dayMs(to) - dayMs(from)) / DAY_MS);

/**
 * Ticks along a run of days, as the reports draw them (pulse_cli/reports_render/axes.py): one on each
 * Monday, labelled every 1, 2 or 4 weeks, whichever first leaves at most `fit` labels. The first label is
 * the full date, the next ones month and day ("11-16"), unless the year changes. [{ index, label|null }]
 */
export function mondayTicks(days, fit) {
  const marks = days.map((iso, i) => [iso, i]).filter(([iso]) => new Date(dayMs(iso)).getUTCDay() === 1);
  const every = [1, 2, 4, 8, 13, 26, 52].find((k) => Math.ceil(marks.length / k) <= fit) || 52;
  let year = null;
  return marks.map(([iso, index], n) => {
    if (n % every) return { index, label: null };
    const label = iso.slice(0, 4) === year ? iso.slice(5) : iso;
    year = iso.slice(0, 4);
    return { index, label };
  });
}
