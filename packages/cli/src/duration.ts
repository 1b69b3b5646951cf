const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/**
 * Parses a duration as the CLI takes it: a number with a unit, `ms`, `s`, `m` or `h`, or several
 * such parts (`1500ms`, `30s`, `5m`, `1.5h`, `1m30s`). Strict: no bare numbers, no spaces, no
 * other units, so a typo never turns into a surprising wait.
 * @returns milliseconds (rounded), or undefined when `text` is not a duration
 */
export function parseDuration(text: string): number | undefined {
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(text)) return undefined;
  let total = 0;
  for (const [, value, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(value) * UNIT_MS[unit as keyof typeof UNIT_MS];
  return Number.isFinite(total) ? Math.round(total) : undefined;
}
