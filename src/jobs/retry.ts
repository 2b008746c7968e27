// Backoff for retried jobs: exponential with full jitter, capped. Pure.
import type { RetryPolicy } from './types.ts';

export const defaultRetry: RetryPolicy = { maxAttempts: 1, initialMs: 1000, coefficient: 2, maxMs: 60_000, nonRetryableCodes: [] };

export function retryPolicy(p: Partial<RetryPolicy> | undefined): RetryPolicy {
  return { ...defaultRetry, ...p };
}

/** Delay before attempt `attempt + 1`, given `attempt` attempts so far (≥ 1). */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * policy.coefficient ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export function shouldRetry(policy: RetryPolicy, attempts: number, code: string, retryable: boolean): boolean {
  if (!retryable) return false;
  if (policy.nonRetryableCodes?.includes(code)) return false;
  return attempts < policy.maxAttempts;
}
