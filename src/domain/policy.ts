// Replication policy: validation and defaults. A policy says how often changes are copied (the
// RPO target), how long recovery points are kept, how often an app-consistent point is taken,
// and how data travels (compression, encryption, bandwidth cap, when initial replication starts).
//
// Rules (each refusal is a sentence naming the field, what was wrong and what is accepted):
// - frequency: 1s to 1h (default 30s). Shorter than 1s is not a replication cycle; longer than an
//   hour is a backup schedule, not replication.
// - retention: at least the frequency (a window shorter than one cycle would hold no point) and at
//   most 30d (default 24h).
// - app-consistent: '0s' or 'off' turns app-consistent points off; otherwise at least the
//   frequency and at most the retention (a point that is pruned before the next one is taken
//   would leave windows without one). Default 4h, or the retention when that is shorter, so that
//   a short retention alone does not make the default invalid.
// - compression zstd|none (default zstd); encryption aes-256-gcm|none (default aes-256-gcm);
//   bandwidth in bytes/s, a number or '512K', '10M', '1G' (default 0 = no cap);
//   initialStart 'immediate' (default) or 'HH:MM' in UTC.
import { invalid } from './errors.ts';
import { parseDuration } from './durations.ts';
import type { Compression, Encryption } from './model.ts';
import { validateName } from './names.ts';

export interface PolicyInput {
  name: string;
  frequency?: string;
  retention?: string;
  appConsistent?: string;
  compression?: string;
  encryption?: string;
  bandwidth?: number | string;
  initialStart?: string;
}

/** A validated policy, ready to store (the store adds id and createdAt). */
export interface PolicySpec {
  name: string;
  frequencySeconds: number;
  retentionSeconds: number;
  appConsistentSeconds: number;
  compression: Compression;
  encryption: Encryption;
  bandwidthBps: number;
  initialStart: string;
}

export const POLICY_DEFAULTS = {
  frequency: '30s',
  retention: '24h',
  appConsistent: '4h',
  compression: 'zstd',
  encryption: 'aes-256-gcm',
  bandwidth: 0,
  initialStart: 'immediate',
} as const;

export const MIN_FREQUENCY_S = 1;
export const MAX_FREQUENCY_S = 3600;
export const MAX_RETENTION_S = 30 * 86_400;

const COMPRESSIONS: readonly Compression[] = ['zstd', 'none'];
const ENCRYPTIONS: readonly Encryption[] = ['aes-256-gcm', 'none'];

export function validatePolicy(input: PolicyInput): PolicySpec {
  const name = validateName(input.name, 'policy');

  const frequencySeconds = parseDuration(input.frequency ?? POLICY_DEFAULTS.frequency, 'frequency');
  if (frequencySeconds < MIN_FREQUENCY_S || frequencySeconds > MAX_FREQUENCY_S) {
    throw invalid('invalid-policy', `frequency ${input.frequency} is out of range: choose between 1s and 1h.`, {
      details: { field: 'frequency' },
    });
  }

  const retentionSeconds = parseDuration(input.retention ?? POLICY_DEFAULTS.retention, 'retention');
  if (retentionSeconds < frequencySeconds) {
    throw invalid(
      'invalid-policy',
      `retention ${input.retention ?? POLICY_DEFAULTS.retention} is shorter than the frequency ${input.frequency ?? POLICY_DEFAULTS.frequency}: the window would hold no recovery point; make the retention at least the frequency.`,
      { details: { field: 'retention' } },
    );
  }
  if (retentionSeconds > MAX_RETENTION_S) {
    throw invalid('invalid-policy', `retention ${input.retention} is too long: keep it at 30d or less.`, {
      details: { field: 'retention' },
    });
  }

  let appConsistentSeconds: number;
  if (input.appConsistent === undefined) {
    appConsistentSeconds = Math.min(parseDuration(POLICY_DEFAULTS.appConsistent), retentionSeconds);
  } else if (input.appConsistent === 'off') {
    appConsistentSeconds = 0;
  } else {
    appConsistentSeconds = parseDuration(input.appConsistent, 'app-consistent frequency');
    if (appConsistentSeconds !== 0 && appConsistentSeconds < frequencySeconds) {
      throw invalid(
        'invalid-policy',
        `app-consistent frequency ${input.appConsistent} is shorter than the frequency ${input.frequency ?? POLICY_DEFAULTS.frequency}: make it at least the frequency, or 'off'.`,
        { details: { field: 'appConsistent' } },
      );
    }
    if (appConsistentSeconds > retentionSeconds) {
      throw invalid(
        'invalid-policy',
        `app-consistent frequency ${input.appConsistent} is longer than the retention ${input.retention ?? POLICY_DEFAULTS.retention}: an app-consistent point would be pruned before the next is taken; make it at most the retention, or 'off'.`,
        { details: { field: 'appConsistent' } },
      );
    }
  }

  const compression = (input.compression ?? POLICY_DEFAULTS.compression) as Compression;
  if (!COMPRESSIONS.includes(compression)) {
    throw invalid('invalid-policy', `compression '${input.compression}' is not known: use 'zstd' or 'none'.`, {
      details: { field: 'compression' },
    });
  }
  const encryption = (input.encryption ?? POLICY_DEFAULTS.encryption) as Encryption;
  if (!ENCRYPTIONS.includes(encryption)) {
    throw invalid('invalid-policy', `encryption '${input.encryption}' is not known: use 'aes-256-gcm' or 'none'.`, {
      details: { field: 'encryption' },
    });
  }

  const bandwidthBps = parseBandwidth(input.bandwidth ?? POLICY_DEFAULTS.bandwidth);

  const initialStart = input.initialStart ?? POLICY_DEFAULTS.initialStart;
  if (initialStart !== 'immediate' && !/^([01]\d|2[0-3]):[0-5]\d$/.test(initialStart)) {
    throw invalid(
      'invalid-policy',
      `initial start '${initialStart}' is not understood: use 'immediate' or a UTC time of day as HH:MM, such as '23:30'.`,
      { details: { field: 'initialStart' } },
    );
  }

  return { name, frequencySeconds, retentionSeconds, appConsistentSeconds, compression, encryption, bandwidthBps, initialStart };
}

const BANDWIDTH_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/** Bytes per second from 0, 1048576, '512K', '10M' or '1G'; 0 = no cap. */
export function parseBandwidth(value: number | string): number {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) return value;
  } else {
    const m = /^(\d{1,12})([KMG]?)$/i.exec(value.trim());
    if (m) return Number(m[1]) * (BANDWIDTH_UNITS[(m[2] ?? '').toUpperCase()] ?? 1);
  }
  throw invalid(
    'invalid-policy',
    `bandwidth '${value}' is not understood: give bytes per second as a whole number or with K, M or G (such as '10M'), or 0 for no cap.`,
    { details: { field: 'bandwidth' } },
  );
}
