// Accessibility measurements made inside the page, on what Chromium rendered (the in-page code is
// a11y-page.js):
// - contrast: for every visible piece of text (text nodes, SVG text, form controls' values and
//   placeholders), the WCAG 2 contrast ratio of its colour against the background it is drawn on
//   (the element's and its ancestors' background colours composited down to the page, with
//   opacity), which must be at least 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold);
// - names: every interactive node of Chromium's accessibility tree has a name, and every form
//   control has a <label>;
// - keyboard: pressing Tab from the top of the page reaches every enabled control, each showing
//   a focus outline.
import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';

const IN_PAGE = readFileSync(new URL('./a11y-page.js', import.meta.url), 'utf8').trim();

function inPage<T>(page: Page, op: string, arg: unknown = null): Promise<T> {
  return page.evaluate(`(${IN_PAGE})(${JSON.stringify(op)}, ${JSON.stringify(arg)})`) as Promise<T>;
}

export interface ContrastFinding {
  text: string;
  where: string;
  fg: string;
  bg: string;
  ratio: number;
  need: number;
  px: number;
  weight: number;
}

export interface ContrastReport {
  /** Text pieces measured. */
  measured: number;
  /** The one closest to its threshold. */
  lowest: ContrastFinding | null;
  failures: ContrastFinding[];
}

/**
 * Measures every visible text on the page, or inside `scope` (a CSS selector, e.g. an open
 * dialog: the page behind a modal dialog is inert and dimmed, and not measured then).
 */
export function contrast(page: Page, scope = 'body'): Promise<ContrastReport> {
  return inPage<ContrastReport>(page, 'contrast', scope);
}

/** Whether the focus is inside the element `sel` names. */
export function focusInside(page: Page, sel: string): Promise<boolean> {
  return inPage<boolean>(page, 'inside', sel);
}

/** The focused element's text (null: nothing focused). */
export async function focusedText(page: Page): Promise<string | null> {
  return (await inPage<{ text: string } | null>(page, 'active'))?.text ?? null;
}

/** Interactive nodes without an accessible name, and form controls without a <label>. */
export async function unnamed(page: Page): Promise<string[]> {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { nodes } = (await cdp.send('Accessibility.getFullAXTree')) as { nodes: { ignored: boolean; role?: { value: string }; name?: { value: string } }[] };
    const interactive = new Set(['button', 'link', 'textbox', 'combobox', 'checkbox', 'radio', 'listbox', 'spinbutton', 'searchbox', 'slider', 'switch', 'menuitem', 'tab']);
    const out = nodes.filter((n) => !n.ignored && interactive.has(n.role?.value ?? '') && (n.name?.value ?? '').trim() === '').map((n) => `${n.role?.value ?? '?'} without a name`);
    return [...out, ...(await inPage<string[]>(page, 'unlabelled'))];
  } finally {
    await cdp.detach();
  }
}

export interface TabReport {
  /** Enabled controls (a group of radio buttons counts once), "mark|tag "label"". */
  controls: string[];
  /** Those Tab did not reach. */
  missed: string[];
  /** Reached ones with no visible focus outline. */
  noOutline: string[];
  presses: number;
}

/** Presses Tab from the top of the page (or of `within`) until the focus comes round again. */
export async function tabThrough(page: Page, within = 'body'): Promise<TabReport> {
  const controls = await inPage<string[]>(page, 'mark', within);
  const want = new Map(controls.map((c) => [c.split('|')[0] ?? '', c]));
  const reached = new Set<string>();
  const noOutline: string[] = [];
  let presses = 0;
  let first: string | null = null;
  while (presses < controls.length * 2 + 20) {
    await page.keyboard.press('Tab');
    presses++;
    const at = await inPage<{ kb: string; outline: boolean } | null>(page, 'active');
    if (at === null) continue;
    if (at.kb === first) break; // round again
    first ??= at.kb;
    if (!reached.has(at.kb) && !at.outline) noOutline.push(want.get(at.kb) ?? at.kb);
    reached.add(at.kb);
  }
  return { controls, missed: controls.filter((c) => !reached.has(c.split('|')[0] ?? '')), noOutline, presses };
}
