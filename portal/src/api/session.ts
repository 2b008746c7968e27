// The signed-in user: the token lives in sessionStorage (gone when the tab closes), the role comes
// from /whoami at sign-in, so the UI can hide what the role may not do (the API refuses it anyway).
import type { Role } from './types.ts';

export interface Session {
  token: string;
  name: string;
  role: Role;
}

const KEY = 'rebound.session';

export function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw === null ? null : (JSON.parse(raw) as Session);
  } catch {
    return null;
  }
}

export function saveSession(s: Session | null): void {
  if (s === null) sessionStorage.removeItem(KEY);
  else sessionStorage.setItem(KEY, JSON.stringify(s));
}

export const canOperate = (s: Session | null): boolean => s?.role === 'operator' || s?.role === 'admin';
export const isAdmin = (s: Session | null): boolean => s?.role === 'admin';
