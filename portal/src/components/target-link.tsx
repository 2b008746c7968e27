// A job's target as a link: a plan's page for plan:NAME, else the machine's item page.
import { Link } from '../router.tsx';

export function TargetLink({ target }: { target: string }) {
  if (target === '') return <>—</>;
  if (target.startsWith('plan:')) return <Link to={`/plans/${encodeURIComponent(target.slice(5))}`}>{target}</Link>;
  return <Link to={`/items/${encodeURIComponent(target)}`}>{target}</Link>;
}
