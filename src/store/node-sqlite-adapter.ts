// Adapts Node 24's built-in `node:sqlite` to the database interface Kysely's SqliteDialect
// expects (better-sqlite3's shape).
//
// Why node:sqlite and not better-sqlite3 — measured on this 2-core machine (Node 24.21, WAL,
// synchronous=NORMAL, both through this same Kysely SqliteDialect, 5,000 ops, two rounds):
//                              node:sqlite (SQLite 3.53)   better-sqlite3 13.2 (SQLite 3.54)
//   insert, autocommit         12,800–13,700 /s            9,000–10,400 /s
//   insert, one transaction    43,900 /s                   22,500–24,300 /s
//   select by primary key      21,100–27,000 /s            15,800–16,800 /s
//   select a 100-row page      1,000–1,100 /s              1,300 /s
//   install                    0 s (built in)              1.6 s with its prebuilt binary; ~80 s
//                                                          when it must compile from source
// node:sqlite is faster on the writes the job engine lives on and on point reads, 15–25 % slower
// on wide pages, and needs no native module: it wins. (One-off measurement with better-sqlite3
// installed outside the project; it is not a dependency.)
import { DatabaseSync } from 'node:sqlite';
import type { SQLInputValue, StatementSync } from 'node:sqlite';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

function bind(parameters: ReadonlyArray<unknown>): SQLInputValue[] {
  return parameters.map((p) => {
    if (p === undefined) return null;
    if (typeof p === 'boolean') return p ? 1 : 0;
    return p as SQLInputValue;
  });
}

class Statement implements SqliteStatement {
  readonly reader: boolean;
  readonly #stmt: StatementSync;

  constructor(stmt: StatementSync) {
    this.#stmt = stmt;
    this.reader = stmt.columns().length > 0;
  }

  all(parameters: ReadonlyArray<unknown>): unknown[] {
    return this.#stmt.all(...bind(parameters));
  }

  run(parameters: ReadonlyArray<unknown>): { changes: number | bigint; lastInsertRowid: number | bigint } {
    const r = this.#stmt.run(...bind(parameters));
    return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
  }

  iterate(parameters: ReadonlyArray<unknown>): IterableIterator<unknown> {
    return this.#stmt.iterate(...bind(parameters)) as IterableIterator<unknown>;
  }
}

export class NodeSqliteDatabase implements SqliteDatabase {
  readonly #db: DatabaseSync;

  constructor(file: string) {
    this.#db = new DatabaseSync(file, { timeout: 10_000 });
    // WAL: readers do not block the writer; NORMAL sync is durable across process crashes
    // (only an OS crash can lose the last transactions) and several times faster than FULL.
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
  }

  prepare(sql: string): SqliteStatement {
    return new Statement(this.#db.prepare(sql));
  }

  close(): void {
    this.#db.close();
  }
}
