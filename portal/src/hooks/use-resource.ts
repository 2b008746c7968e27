// Loads something from the API, optionally every few seconds, and keeps the last good value
// while a reload is in flight (so a table does not flash empty each poll).
import { useCallback, useEffect, useRef, useState } from 'react';

export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload(): void;
}

export function useResource<T>(load: () => Promise<T>, deps: readonly unknown[], everyMs?: number): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const loadRef = useRef(load);
  loadRef.current = load;
  const gen = useRef(0);

  const reload = useCallback(() => {
    const mine = ++gen.current;
    loadRef.current().then(
      (v) => {
        if (mine !== gen.current) return;
        setData(v);
        setError(undefined);
        setLoading(false);
      },
      (err: unknown) => {
        if (mine !== gen.current) return;
        setError(err);
        setLoading(false);
      },
    );
  }, []);

  useEffect(() => {
    setData(undefined);
    setLoading(true);
    reload();
    if (everyMs === undefined) return undefined;
    const t = window.setInterval(reload, everyMs);
    return () => window.clearInterval(t);
  }, deps);

  return { data, error, loading, reload };
}
