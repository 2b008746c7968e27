// The API's JSON shapes as TypeBox schemas: request validation and response serialisation both
// come from these, and so does the OpenAPI document. Open objects (config, details, job params)
// are declared with additionalProperties so the serialiser keeps their fields.
import { Type } from '@sinclair/typebox';
import type { TSchema } from '@sinclair/typebox';

export const Name = Type.String({ minLength: 1, maxLength: 63 });
export const OpenObject = Type.Object({}, { additionalProperties: true });
export const Millis = Type.Integer();
export const NullableMillis = Type.Union([Type.Integer(), Type.Null()]);

export const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }),
});

/** Page of a list: `{ items, next }` with an opaque cursor. */
export function Page<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), next: Type.Union([Type.String(), Type.Null()]) });
}

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  cursor: Type.Optional(Type.String({ maxLength: 512 })),
};

export const NameParam = Type.Object({ name: Name });

export const Site = Type.Object({
  id: Type.String(),
  name: Type.String(),
  provider: Type.String(),
  root: Type.String(),
  config: OpenObject,
  createdAt: Millis,
});

export const Host = Type.Object({
  id: Type.String(),
  site: Type.String(),
  name: Type.String(),
  address: Type.Union([Type.String(), Type.Null()]),
  config: OpenObject,
  createdAt: Millis,
});

export const Policy = Type.Object({
  id: Type.String(),
  name: Type.String(),
  frequencySeconds: Type.Integer(),
  retentionSeconds: Type.Integer(),
  appConsistentSeconds: Type.Integer(),
  compression: Type.String(),
  encryption: Type.String(),
  bandwidthBps: Type.Integer(),
  initialStart: Type.String(),
  createdAt: Millis,
});

export const Pairing = Type.Object({
  id: Type.String(),
  primary: Type.String(),
  recovery: Type.String(),
  policy: Type.String(),
  createdAt: Millis,
});

export const MachineDisk = Type.Object({
  id: Type.String(),
  path: Type.String(),
  sizeBytes: Type.Integer(),
  format: Type.String(),
});

export const Machine = Type.Object({
  id: Type.String(),
  name: Type.String(),
  site: Type.String(),
  host: Type.Union([Type.String(), Type.Null()]),
  kind: Type.String(),
  disks: Type.Array(MachineDisk),
  config: OpenObject,
  createdAt: Millis,
});

export const Item = Type.Object({
  id: Type.String(),
  machine: Type.String(),
  pairing: Type.String(),
  state: Type.String(),
  direction: Type.String(),
  activeSite: Type.String(),
  group: Type.Union([Type.String(), Type.Null()]),
  health: Type.String(),
  lastPointAt: NullableMillis,
  rpoSeconds: Type.Union([Type.Integer(), Type.Null()]),
  details: OpenObject,
  version: Type.Integer(),
  createdAt: Millis,
  updatedAt: Millis,
});

const ErrorView = Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) });

export const Task = Type.Object({
  seq: Type.Integer(),
  name: Type.String(),
  state: Type.String(),
  progress: Type.Number(),
  startedAt: NullableMillis,
  finishedAt: NullableMillis,
  result: Type.Optional(Type.Unknown()),
  error: Type.Optional(ErrorView),
});

export const Job = Type.Object({
  id: Type.String(),
  kind: Type.String(),
  target: Type.String(),
  state: Type.String(),
  progress: Type.Number(),
  params: Type.Unknown(),
  result: Type.Optional(Type.Unknown()),
  error: Type.Optional(ErrorView),
  attempts: Type.Integer(),
  cancelRequested: Type.Boolean(),
  createdBy: Type.String(),
  createdAt: Millis,
  startedAt: NullableMillis,
  finishedAt: NullableMillis,
  updatedAt: Millis,
  tasks: Type.Array(Task),
  log: Type.Array(
    Type.Object({ at: Millis, level: Type.String(), task: Type.Union([Type.Integer(), Type.Null()]), message: Type.String() }),
  ),
});

export const JobAccepted = Type.Object({ job: Job });

export const Token = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: Type.String(),
  createdAt: Millis,
  expiresAt: NullableMillis,
  revokedAt: NullableMillis,
  lastUsedAt: NullableMillis,
});

export const NewToken = Type.Object({ token: Type.String(), id: Type.String(), name: Type.String(), role: Type.String(), expiresAt: NullableMillis });

export const AuditEntry = Type.Object({
  id: Type.Integer(),
  at: Millis,
  actor: Type.String(),
  action: Type.String(),
  target: Type.String(),
  status: Type.Integer(),
  detail: Type.Union([OpenObject, Type.Null()]),
});

export const Event = Type.Object({
  id: Type.Integer(),
  at: Millis,
  kind: Type.String(),
  item: Type.Union([Type.String(), Type.Null()]),
  message: Type.String(),
  data: Type.Union([Type.Unknown(), Type.Null()]),
});

/** Standard error responses for a route's OpenAPI entry. */
export function errors(...statuses: number[]): Record<number, typeof ErrorBody> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorBody]));
}

export const RecoveryPoint = Type.Object({
  id: Type.String(),
  item: Type.String(),
  takenAt: Millis,
  kind: Type.String(),
  status: Type.String(),
  groupPointId: Type.Union([Type.String(), Type.Null()]),
  seq: Type.Union([Type.Integer(), Type.Null()]),
  disks: Type.Array(Type.Object({ id: Type.String(), sizeBytes: Type.Number() })),
});

export const Accepted = Type.Object({ job: Job });
