// Identifiers, clocks and JSON columns for rows: UUIDs as text, times as epoch milliseconds,
// structured values as JSON text.
import { randomUUID } from 'node:crypto';

export function newId(): string {
  return randomUUID();
}

export function now(): number {
  return Date.now();
}

/** Parses a JSON column, with a fallback for NULL. */
export function parseJson<T>(text: string | null | undefined, fallback: T): T {
  if (text === null || text === undefined || text === '') return fallback;
  return JSON.parse(text) as T;
}

/** Serialises a value for a JSON column (undefined is stored as NULL). */
export function toJson(value: unknown): string | null {
  return value === undefined ? null : JSON.stringify(value);
}
