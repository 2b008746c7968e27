// /machines: machines Rebound can protect, added by their disks. A disk is an image file or a
// block device that must exist. Image files must stay inside the site's root: the given path may
// not contain '..' and its real path (symlinks resolved) must be under the root's real path, so a
// link cannot smuggle another file (say /etc/shadow) into replication. A block device is named
// by its path under /dev.
import { closeSync, openSync, readSync, readFileSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { conflict, invalid, notFound } from '../../domain/errors.ts';
import { validateName } from '../../domain/names.ts';
import type { MachineDisk } from '../../domain/model.ts';
import type { Row } from '../../store/schema.ts';
import { newId, now } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Machine, NameParam, OpenObject, Page, PageQuery, errors } from '../schemas.ts';
import { machineView } from '../views.ts';
import { siteByName } from './sites.ts';

const CreateMachine = Type.Object(
  {
    name: Type.String({ maxLength: 200 }),
    site: Type.String({ maxLength: 200 }),
    disks: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 64 }),
    host: Type.Optional(Type.String({ maxLength: 200 })),
    config: Type.Optional(OpenObject),
  },
  { additionalProperties: false },
);
const ListQuery = Type.Object({ ...PageQuery, site: Type.Optional(Type.String({ maxLength: 200 })) });

const badDisk = (disk: string, why: string) =>
  invalid('invalid-disk', `disk ${disk} ${why}`, { details: { field: 'disks', value: disk } });

function blockDeviceSize(real: string): number {
  try {
    return Number(readFileSync(`/sys/class/block/${path.basename(real)}/size`, 'utf8').trim()) * 512;
  } catch {
    return 0;
  }
}

/** qcow2 images start with 'QFI\xfb'; their virtual size is the big-endian u64 at byte 24. */
function imageInfo(file: string, fileSize: number): { format: 'raw' | 'qcow2'; sizeBytes: number } {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(32);
    const n = readSync(fd, head, 0, 32, 0);
    if (n >= 32 && head.readUInt32BE(0) === 0x514649fb) return { format: 'qcow2', sizeBytes: Number(head.readBigUInt64BE(24)) };
    return { format: 'raw', sizeBytes: fileSize };
  } finally {
    closeSync(fd);
  }
}

/** Checks one disk path against the site root; returns its description. */
export function checkDisk(disk: string, siteRoot: string): MachineDisk {
  if (!path.isAbsolute(disk) || disk.includes('\0')) throw badDisk(disk, 'is not an absolute path: give the full path.');
  if (disk.split('/').includes('..')) throw badDisk(disk, "contains '..': give the path without it.");
  let real: string;
  try {
    real = realpathSync(disk);
  } catch {
    throw badDisk(disk, 'does not exist: create the image or attach the device first.');
  }
  const st = statSync(real);
  if (st.isBlockDevice()) {
    if (!disk.startsWith('/dev/')) throw badDisk(disk, 'is a block device not named under /dev: name it by its /dev path.');
    return { id: newId(), path: disk, sizeBytes: blockDeviceSize(real), format: 'raw' };
  }
  let rootReal: string;
  try {
    rootReal = realpathSync(siteRoot);
  } catch {
    throw badDisk(disk, `cannot be checked: the site's root ${siteRoot} is missing.`);
  }
  if (!real.startsWith(rootReal.endsWith('/') ? rootReal : `${rootReal}/`)) {
    throw badDisk(disk, `is outside the site's root ${siteRoot}${real !== disk ? ` (it resolves to ${real})` : ''}: put the image under the root.`);
  }
  if (!st.isFile()) throw badDisk(disk, 'is neither a regular file nor a block device.');
  const info = imageInfo(real, st.size);
  // Stored by its real path: a link retargeted later cannot redirect replication to another file.
  return { id: newId(), path: real, sizeBytes: info.sizeBytes, format: info.format };
}

export function machineRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;
  const machines = () =>
    db
      .selectFrom('machines as m')
      .innerJoin('sites as s', 's.id', 'm.site_id')
      .leftJoin('hosts as h', 'h.id', 'm.host_id')
      .selectAll('m')
      .select(['s.name as site', 'h.name as host']);

  app.post('/machines', { schema: { tags: ['machines'], body: CreateMachine, response: { 201: Machine, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const body = req.body as Static<typeof CreateMachine>;
    const name = validateName(body.name, 'machine');
    const site = await siteByName(db, body.site);
    if (await db.selectFrom('machines').select('id').where('name', '=', name).executeTakeFirst()) {
      throw conflict('machine.exists', `a machine named '${name}' already exists: choose another name.`);
    }
    let hostId: string | null = null;
    if (body.host !== undefined) {
      const host = await db.selectFrom('hosts').select('id').where('site_id', '=', site.id).where('name', '=', body.host).executeTakeFirst();
      if (!host) throw notFound('host.not-found', `site ${site.name} has no host named '${body.host}': add it with POST /sites/${site.name}/hosts.`);
      hostId = host.id;
    }
    if (new Set(body.disks).size !== body.disks.length) throw invalid('invalid-disk', 'the same disk is listed twice: list each disk once.');
    const disks = body.disks.map((d) => checkDisk(d, site.root));
    const row: Row<'machines'> = {
      id: newId(),
      name,
      site_id: site.id,
      host_id: hostId,
      kind: site.provider === 'qemu' ? 'vm' : 'physical',
      disks: JSON.stringify(disks),
      config: JSON.stringify(body.config ?? {}),
      created_at: now(),
    };
    await db.insertInto('machines').values(row).execute();
    return reply.code(201).send(machineView({ ...row, site: site.name, host: body.host ?? null }));
  });

  app.get('/machines', { schema: { tags: ['machines'], querystring: ListQuery, response: { 200: Page(Machine), ...errors(400, 401, 404) } } }, async (req) => {
    const q = req.query as Static<typeof ListQuery>;
    const limit = pageLimit(q.limit);
    let sel = machines();
    if (q.site !== undefined) sel = sel.where('m.site_id', '=', (await siteByName(db, q.site)).id);
    if (q.cursor) sel = sel.where('m.name', '>', decodeTextCursor(q.cursor));
    return toPage(await sel.orderBy('m.name').limit(limit + 1).execute(), limit, (r) => r.name, machineView);
  });

  app.get('/machines/:name', { schema: { tags: ['machines'], params: NameParam, response: { 200: Machine, ...errors(400, 401, 404) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    const row = await machines().where('m.name', '=', name).executeTakeFirst();
    if (!row) throw notFound('machine.not-found', `no machine is named '${name}': list them with rebound machine list.`);
    return machineView(row);
  });
}
