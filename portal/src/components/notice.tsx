// What a page shows when a call failed: the API's sentence, or, when the server has no such route
// yet, that the feature is not available on this server.
import { ApiError, describeError } from '../api/client.ts';

export function Notice({ error, what }: { error: unknown; what?: string }) {
  if (error === undefined || error === null) return null;
  if (error instanceof ApiError && error.notAvailable) {
    return (
      <p className="notice info" role="status">
        {what ?? 'This feature'} is not available on this server yet.
      </p>
    );
  }
  return (
    <p className="notice error" role="alert">
      {describeError(error)}
    </p>
  );
}

export function Loading({ loading }: { loading: boolean }) {
  return loading ? <p aria-live="polite">Loading…</p> : null;
}
