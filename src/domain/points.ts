// Point choices as people write them (--point, the API's `point` field): 'latest' (newest point,
// after processing any data already received), 'latest-processed' (newest point already
// processed: fastest to start), 'latest-app-consistent', or a point's id.
import { invalid } from './errors.ts';
import type { PointChoice } from './model.ts';

export const NAMED_POINT_CHOICES = ['latest', 'latest-processed', 'latest-app-consistent'] as const;

export function parsePointChoice(text: string | undefined, fallback: PointChoice = 'latest'): PointChoice {
  if (text === undefined) return fallback;
  const t = text.trim();
  if ((NAMED_POINT_CHOICES as readonly string[]).includes(t)) return t as PointChoice;
  if (/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(t) && !t.startsWith('latest')) return { id: t };
  throw invalid('invalid-point', `point '${text}' is not understood: use latest, latest-processed, latest-app-consistent or a point id (rebound points MACHINE lists them).`);
}

export function formatPointChoice(choice: PointChoice): string {
  return typeof choice === 'string' ? choice : choice.id;
}
