// Checking what the user typed, with the rules from GET /v1/rules.
//
// A faithful port of pulse_core/values.py (parse_date, parse_metric, parse_fields): the same
// accepted inputs and the same one-line messages, including the Python quirks the CLI shows
// (repr() quoting, Decimal's grammar with underscores and Unicode digits, normalize() and the 28-digit
// context, date.fromisoformat's forms). tests/data/validation_cases.json is run against both.

const PY_SPACES = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
const CONTEXT_DIGITS = 28; // Python's default decimal context precision
const CONTEXT_EMAX = 999_999;
const MAX_EXPONENT = 999_999_999_999_999_999n; // libmpdec's limit on a 64-bit build

export class ValidationError extends Error {
  constructor(code, field, value, allowed, message) {
    super(message);
    this.code = code;
    this.field = field;
    this.value = value;
    this.allowed = allowed;
  }
}

// -- Python string helpers -----------------------------------------------------------------------
export function isPySpace(ch) {
  return PY_SPACES.has(ch.codePointAt(0));
}

/** str.strip() with no argument. */
export function pyStrip(text) {
  const chars = [...text];
  let start = 0;
  let end = chars.length;
  while (start < end && isPySpace(chars[start])) start += 1;
  while (end > start && isPySpace(chars[end - 1])) end -= 1;
  return chars.slice(start, end).join('');
}

const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

function hex(code, width) {
  return code.toString(16).padStart(width, '0');
}

/** repr() of a str, as Python 3 writes it. */
export function pyRepr(value) {
  if (typeof value !== 'string') {
    if (value === null || value === undefined) return 'None';
    if (value === true) return 'True';
    if (value === false) return 'False';
    return String(value);
  }
  const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of value) {
    const code = ch.codePointAt(0);
    if (ch === quote || ch === '\\') out += '\\' + ch;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += '\\x' + hex(code, 2);
    else if (code < 0x7f || ch === ' ') out += ch;
    else if (NOT_PRINTABLE.test(ch)) {
      if (code < 0x100) out += '\\x' + hex(code, 2);
      else if (code < 0x10000) out += '\\u' + hex(code, 4);
      else out += '\\U' + hex(code, 8);
    } else out += ch;
  }
  return out + quote;
}

/** str.format for the rules' templates: `{name}` and `{name!r}`. */
export function pyFormat(template, values) {
  return template.replace(/\{(\w+)(!r)?\}/g, (_, name, bang) => {
    const value = values[name];
    return bang ? pyRepr(value) : String(value);
  });
}

// -- Decimal --------------------------------------------------------------------------------------
// A finite decimal is {negative, coef (BigInt >= 0), exp}: (-1)^negative * coef * 10^exp.

const DIGIT = /\p{Nd}/u;

function unicodeDigit(ch) {
  // Unicode decimal digits come in runs of ten starting at a zero: count back to the run's start.
  let code = ch.codePointAt(0);
  let start = code;
  while (start > 0 && DIGIT.test(String.fromCodePoint(start - 1))) start -= 1;
  return (code - start) % 10;
}

/** What Decimal(text) makes of a string: a finite decimal, {special: 'inf'|'nan'}, or null (invalid). */
export function parseDecimal(text) {
  let ascii = '';
  for (const ch of pyStrip(text)) {
    const code = ch.codePointAt(0);
    if (ch === '_') continue; // the C implementation drops every underscore
    if (code > 0 && code <= 127) ascii += ch;
    else if (isPySpace(ch)) ascii += ' ';
    else if (DIGIT.test(ch)) ascii += String(unicodeDigit(ch));
    else return null;
  }
  const special = /^[+-]?(inf|infinity|s?nan\d*)$/i.exec(ascii);
  if (special) return { special: special[1].toLowerCase().startsWith('inf') ? 'inf' : 'nan' };
  const m = /^([+-])?(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/.exec(ascii);
  if (!m) return null;
  const whole = m[2] ?? '';
  const frac = m[3] ?? m[4] ?? '';
  const exponent = m[5] ? BigInt(m[5]) : 0n;
  if (exponent > MAX_EXPONENT || exponent < -MAX_EXPONENT) return null; // Decimal: InvalidOperation
  return { negative: m[1] === '-', coef: BigInt(whole + frac || '0'), exp: Number(exponent) - frac.length };
}

function pow10(n) {
  return 10n ** BigInt(n);
}

function digitsOf(coef) {
  return coef.toString().length;
}

/** -1, 0 or 1: a compared with b (both finite decimals). */
export function compareDecimal(a, b) {
  const sa = a.coef === 0n ? 0 : (a.negative ? -1 : 1);
  const sb = b.coef === 0n ? 0 : (b.negative ? -1 : 1);
  if (sa !== sb) return sa < sb ? -1 : 1;
  if (sa === 0) return 0;
  // Same sign: compare magnitudes, first by their order of magnitude (cheap with huge exponents).
  const ma = digitsOf(a.coef) + a.exp;
  const mb = digitsOf(b.coef) + b.exp;
  let mag;
  if (ma !== mb) mag = ma < mb ? -1 : 1;
  else {
    const e = Math.min(a.exp, b.exp);
    const x = a.coef * pow10(a.exp - e);
    const y = b.coef * pow10(b.exp - e);
    mag = x === y ? 0 : (x < y ? -1 : 1);
  }
  return sa > 0 ? mag : -mag;
}

function isIntegral(d) {
  return d.exp >= 0 || d.coef % pow10(-d.exp) === 0n;
}

function toBigInt(d) {
  const magnitude = d.exp >= 0 ? d.coef * pow10(d.exp) : d.coef / pow10(-d.exp);
  return d.negative ? -magnitude : magnitude;
}

/** format(d.normalize(), 'f'): rounded to 28 digits (half even), without trailing zeros. */
export function showDecimal(d) {
  let { coef, exp } = d;
  const extra = digitsOf(coef) - CONTEXT_DIGITS;
  if (extra > 0) {
    const unit = pow10(extra);
    let q = coef / unit;
    const r = coef % unit;
    if (r * 2n > unit || (r * 2n === unit && q % 2n === 1n)) q += 1n;
    coef = q;
    exp += extra;
  }
  if (coef === 0n) exp = 0;
  while (coef !== 0n && coef % 10n === 0n) {
    coef /= 10n;
    exp += 1;
  }
  const sign = d.negative ? '-' : '';
  const digits = coef.toString();
  if (digits.length - 1 + exp > CONTEXT_EMAX) return `${sign}${digits}E+${exp}`; // Python overflows here
  if (exp >= 0) return sign + digits + (coef === 0n ? '' : '0'.repeat(exp));
  const point = digits.length + exp;
  if (point > 0) return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
  return `${sign}0.${'0'.repeat(-point)}${digits}`;
}

/** d.quantize(Decimal('0.01'), ROUND_HALF_UP) + 0, written with two decimals ("7.50"). */
export function hundredths(d) {
  let cents;
  if (d.coef === 0n || digitsOf(d.coef) + d.exp < -2) cents = 0n; // below 0.001 rounds to 0.00
  else if (d.exp >= -2) cents = d.coef * pow10(d.exp + 2);
  else {
    const unit = pow10(-d.exp - 2);
    cents = d.coef / unit;
    if ((d.coef % unit) * 2n >= unit) cents += 1n;
  }
  const text = cents.toString().padStart(3, '0');
  const sign = d.negative && cents !== 0n ? '-' : '';
  return `${sign}${text.slice(0, -2)}.${text.slice(-2)}`;
}

// -- the checks -----------------------------------------------------------------------------------
function fail(rules, code, field, value, allowed) {
  const message = pyFormat(rules.messages[code], { field, value, allowed });
  return new ValidationError(code, field, value, allowed, message);
}

/** A number within the field's limits: "7.50" (kept to 0.01) or, for whole-number fields, a Number. */
export function parseMetric(rules, name, raw) {
  const limit = rules.limits[name];
  const number = parseDecimal(String(raw));
  if (number === null || number.special) throw fail(rules, 'not_a_number', name, raw, limit.allowed);
  const low = parseDecimal(limit.min);
  const high = parseDecimal(limit.max);
  const inRange = compareDecimal(low, number) <= 0 && compareDecimal(number, high) <= 0;
  if (limit.integer) {
    if (!isIntegral(number)) throw fail(rules, 'not_an_integer', name, raw, limit.allowed);
    if (!inRange) throw fail(rules, 'out_of_range', name, showDecimal(number), limit.allowed);
    return Number(toBigInt(number));
  }
  if (!inRange) throw fail(rules, 'out_of_range', name, showDecimal(number), limit.allowed);
  return hundredths(number);
}

/**
 * Check every given field (null or undefined means "not given"); throws the first error found, in
 * the CLI's order. `hrv_method` comes back beside `hrv_ms` (default rmssd), never on its own.
 */
export function parseFields(rules, raw) {
  const out = {};
  for (const name of Object.keys(rules.limits)) {
    if (raw[name] !== null && raw[name] !== undefined) out[name] = parseMetric(rules, name, raw[name]);
  }
  let method = raw.hrv_method;
  if (method !== null && method !== undefined) {
    method = pyStrip(String(method)).toLowerCase();
    if (!rules.hrv_methods.includes(method)) {
      throw fail(rules, 'invalid_choice', 'hrv_method', raw.hrv_method, rules.hrv_methods.join(' or '));
    }
    if (!('hrv_ms' in out)) throw fail(rules, 'nothing_to_set', 'hrv_method', method, 'only together with hrv_ms');
  }
  if ('hrv_ms' in out) out.hrv_method = method || rules.default_hrv_method;
  const note = raw.note;
  if (note !== null && note !== undefined) {
    const text = String(note);
    const length = [...text].length;
    if (length > rules.note_max_chars) {
      throw fail(rules, 'too_long', 'note', length, `up to ${rules.note_max_chars} characters`);
    }
    out.note = text || null; // an empty note clears it
  }
  return out;
}

// -- dates ----------------------------------------------------------------------------------------
export const DATE_ALLOWED = 'YYYY-MM-DD, today or yesterday';
const DAY_MS = 86_400_000;

/** A calendar date as "YYYY-MM-DD" from UTC midnight milliseconds. */
function isoOf(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function msOf(year, month, day) {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return date.getTime();
}

function validYmd(year, month, day) {
  if (year < 1 || month < 1 || month > 12 || day < 1) return false;
  const ms = msOf(year, month, day);
  const back = new Date(ms);
  return back.getUTCMonth() === month - 1 && back.getUTCDate() === day;
}

/** date.fromisoformat as CPython 3.11's C implementation reads it; null when it raises. */
export function fromIsoFormat(text) {
  if (/[^\x00-\x7f]/.test(text) || ![7, 8, 10].includes(text.length)) return null;
  let pos = 0;
  const digits = (n) => {
    const part = text.slice(pos, pos + n);
    if (part.length !== n || !/^[0-9]+$/.test(part)) return null;
    pos += n;
    return parseInt(part, 10);
  };
  const year = digits(4);
  if (year === null) return null;
  const dash = text[pos] === '-';
  if (dash) pos += 1;
  if (text[pos] === 'W') {
    pos += 1;
    const week = digits(2);
    if (week === null) return null;
    let weekday = 1;
    if (pos < text.length) {
      if (dash && text[pos++] !== '-') return null;
      weekday = digits(1);
      if (weekday === null) return null;
    }
    return isoWeekDate(year, week, weekday);
  }
  const month = digits(2);
  if (month === null) return null;
  if (dash && text[pos++] !== '-') return null;
  const day = digits(2);
  if (day === null || !validYmd(year, month, day)) return null;
  return isoOf(msOf(year, month, day));
}

function isoWeekDate(year, week, weekday) {
  if (year < 1 || year > 9999 || weekday < 1 || weekday > 7 || week < 1) return null;
  // Week 1 holds the year's first Thursday; a year has 53 weeks if it starts (or, in a leap year,
  // starts or ends) on a Thursday.
  const jan1 = new Date(msOf(year, 1, 1)).getUTCDay() || 7;
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const weeks = jan1 === 4 || (leap && jan1 === 3) ? 53 : 52;
  if (week > weeks) return null;
  const week1Monday = msOf(year, 1, 1) + ((jan1 <= 4 ? 1 : 8) - jan1) * DAY_MS;
  const ms = week1Monday + ((week - 1) * 7 + (weekday - 1)) * DAY_MS;
  const result = isoOf(ms);
  return Number(result.slice(0, 4)) >= 1 ? result : null;
}

/** parse_date: "YYYY-MM-DD" (only that form), today, yesterday or tomorrow, from earliest_date on and no more than max_days_ahead after `today` ("YYYY-MM-DD"). */
export function parseDate(rules, value, today, field = 'date') {
  const todayMs = Date.parse(today + 'T00:00:00Z');
  const words = { today: todayMs, yesterday: todayMs - DAY_MS, tomorrow: todayMs + DAY_MS };
  const word = pyStrip(String(value)).toLowerCase();
  let day;
  if (Object.hasOwn(words, word)) day = isoOf(words[word]);
  else {
    const text = pyStrip(String(value));
    day = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/.test(text) ? fromIsoFormat(text) : null;
    if (day === null) throw fail(rules, 'invalid_date', field, value, DATE_ALLOWED);
  }
  if (day < rules.earliest_date) throw fail(rules, 'out_of_range', field, day, `from ${rules.earliest_date}`);
  const latest = isoOf(todayMs + rules.max_days_ahead * DAY_MS);
  if (day > latest) throw fail(rules, 'future_date', field, day, `up to ${latest}`);
  return day;
}

/** The user's local calendar date as "YYYY-MM-DD". */
export function localToday(now = new Date()) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}
