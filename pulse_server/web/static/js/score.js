// The day score and the warnings, computed in the browser from the rules' coefficients, for entries
// the server has not scored yet. Exact rational arithmetic with BigInt, like pulse_core's Fractions,
// so the browser's score is the server's to the point.

import { pyFormat } from './values.js';

function gcd(a, b) {
  a = a < 0n ? -a : a;
  b = b < 0n ? -b : b;
  while (b) [a, b] = [b, a % b];
  return a;
}

export class Fraction {
  constructor(num, den = 1n) {
    if (den < 0n) [num, den] = [-num, -den];
    const g = gcd(num, den) || 1n;
    this.num = num / g;
    this.den = den / g;
  }

  /** "4", "1/333", "7.50", "-0.5" */
  static parse(text) {
    const s = String(text).trim();
    const ratio = /^(-?\d+)\/(\d+)$/.exec(s);
    if (ratio) return new Fraction(BigInt(ratio[1]), BigInt(ratio[2]));
    const m = /^(-?)(\d*)(?:\.(\d*))?$/.exec(s);
    if (!m || (m[2] === '' && !m[3])) throw new Error(`not a number: ${s}`);
    const frac = m[3] ?? '';
    const num = BigInt((m[2] || '0') + frac) * (m[1] ? -1n : 1n);
    return new Fraction(num, 10n ** BigInt(frac.length));
  }

  add(o) { return new Fraction(this.num * o.den + o.num * this.den, this.den * o.den); }
  sub(o) { return new Fraction(this.num * o.den - o.num * this.den, this.den * o.den); }
  mul(o) { return new Fraction(this.num * o.num, this.den * o.den); }
  div(o) { return new Fraction(this.num * o.den, this.den * o.num); }
  cmp(o) {
    const d = this.num * o.den - o.num * this.den;
    return d === 0n ? 0 : (d < 0n ? -1 : 1);
  }
  abs() { return new Fraction(this.num < 0n ? -this.num : this.num, this.den); }
  min(o) { return this.cmp(o) <= 0 ? this : o; }
  /** floor(x + 1/2) for x >= 0: rounds half up to an integer. */
  roundHalfUp() {
    const twice = this.add(new Fraction(1n, 2n));
    return twice.num / twice.den; // BigInt division truncates; >= 0 here, so this is floor
  }
  /** Rounded half up to `places` decimals, written without trailing zeros (Python's _plain). */
  plain(places) {
    const scale = 10n ** BigInt(places);
    const negative = this.num < 0n;
    const scaled = this.abs().mul(new Fraction(scale)).roundHalfUp();
    let text = scaled.toString().padStart(places + 1, '0');
    if (places > 0) text = `${text.slice(0, -places)}.${text.slice(-places)}`.replace(/\.?0+$/, '');
    return (negative && scaled !== 0n ? '-' : '') + text;
  }
}

const F = (v) => (v instanceof Fraction ? v : Fraction.parse(v));
const present = (v) => v !== null && v !== undefined && v !== '';

/** Score v1 (pulse_core.score.day_score): an integer 0-100, or null unless sleep and steps are set. */
export function dayScore(rules, sleepHours, hrvMs, steps) {
  if (!present(sleepHours) || !present(steps)) return null;
  const s = rules.score;
  const sleep = F(sleepHours).mul(F(s.sleep.points_per_hour)).min(F(s.sleep.max));
  const hrv = present(hrvMs) ? F(hrvMs).mul(F(s.hrv.points_per_ms)).min(F(s.hrv.max)) : F(s.hrv.missing);
  const walked = F(String(steps)).mul(F(s.steps.points_per_step)).min(F(s.steps.max));
  const exact = sleep.add(hrv).add(walked).div(F(s.max_points)).mul(F(String(s.scale)));
  return Number(exact.roundHalfUp());
}

/** A value as the warnings write it: 7.5, 2, 60000 (no trailing zeros). */
const DAY_MS = 86_400_000;

/** A weight from the window's days before `date` (a zero one cannot be compared). */
function inWindow(rules, previous, date) {
  if (!present(previous.weight_kg) || F(String(previous.weight_kg)).cmp(F('0')) === 0) return false;
  const days = (Date.parse(`${date}T00:00:00Z`) - Date.parse(`${previous.date}T00:00:00Z`)) / DAY_MS;
  const span = rules.warnings.weight_change_window_days;
  return days > 0 && (span === undefined || days <= span);
}

export function plain(value) {
  return F(String(value)).plain(2);
}

/**
 * pulse_core.warnings.field_warnings: warnings for the values being set now on `date` ("YYYY-MM-DD").
 * `previous` is the latest earlier entry with a weight ({date, weight_kg}) or null; the change is
 * measured against it only when it is from the `weight_change_window_days` days before `date`.
 */
export function fieldWarnings(rules, fields, previous, date) {
  const found = [];
  for (const [name, t] of Object.entries(rules.warnings)) {
    if (typeof t !== 'object' || t === null || !present(fields[name])) continue;
    const value = F(String(fields[name]));
    const shown = plain(fields[name]);
    if (t.below !== null && value.cmp(F(t.below)) < 0) {
      const message = pyFormat(rules.messages.warn_low, { field: name, value: shown, unit: t.unit, low: plain(t.below) });
      found.push({ code: 'warn_low', field: name, value: shown, message });
    }
    if (t.above !== null && value.cmp(F(t.above)) > 0) {
      const message = pyFormat(rules.messages.warn_high, { field: name, value: shown, unit: t.unit, high: plain(t.above) });
      found.push({ code: 'warn_high', field: name, value: shown, message });
    }
  }
  const weight = fields.weight_kg;
  if (present(weight) && previous && inWindow(rules, previous, date)) {
    const before = F(previous.weight_kg);
    const pct = F(String(weight)).sub(before).abs().div(before).mul(F('100'));
    const limit = F(rules.warnings.weight_change_pct);
    if (pct.cmp(limit) > 0) {
      const message = pyFormat(rules.messages.warn_weight_change, {
        value: plain(weight), pct: pct.plain(1), previous: plain(previous.weight_kg),
        previous_date: previous.date, limit: plain(rules.warnings.weight_change_pct),
      });
      found.push({ code: 'warn_weight_change', field: 'weight_kg', value: plain(weight), message });
    }
  }
  return found;
}
