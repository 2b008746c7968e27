/* global document, window, getComputedStyle, NodeFilter, SVGElement, HTMLInputElement, HTMLSelectElement */
// The in-page half of test/portal/a11y.ts: one function expression, evaluated in the page by
// Playwright as `(this file)(op, arg)` (through the DevTools protocol, which the portal's
// Content-Security-Policy does not refuse, unlike an injected <script>). Plain JavaScript, as the
// test build has no DOM types.
// eslint-disable-next-line @typescript-eslint/no-unused-expressions -- evaluated, not run as a module
(function a11y(op, arg) {
  switch (op) {
    case 'contrast':
      return contrast(arg);
    case 'mark':
      return mark(arg);
    case 'active':
      return active();
    case 'inside':
      return document.querySelector(arg)?.contains(document.activeElement) === true;
    case 'unlabelled':
      return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter((e) => (e.labels?.length ?? 0) === 0)
        .map((e) => `${e.tagName.toLowerCase()}#${e.id} (${e.getAttribute('name') ?? ''}) has no <label>`);
    default:
      throw new Error(`a11y: no operation ${op}`);
  }

  function parse(c) {
    const m = /^rgba?\(([\d.]+)[ ,]+([\d.]+)[ ,]+([\d.]+)(?:[ ,/]+([\d.]+%?))?\)$/.exec(c.trim());
    if (!m) return null;
    let a = m[4] === undefined ? 1 : Number(m[4].replace('%', ''));
    if (m[4]?.endsWith('%')) a /= 100;
    return [Number(m[1]), Number(m[2]), Number(m[3]), a];
  }
  // `top` drawn over the opaque `bottom`.
  function over(top, bottom) {
    return [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
  }
  // WCAG 2 relative luminance of an sRGB colour.
  function lum(c) {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function ratio(a, b) {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  }
  function hex(c) {
    return `#${c.slice(0, 3).map((v) => Math.round(v).toString(16).padStart(2, '0')).join('')}`;
  }
  function describe(el) {
    const parts = [];
    for (let e = el; e && parts.length < 4 && e.tagName !== 'BODY'; e = e.parentElement) {
      const cls = typeof e.className === 'string' && e.className.trim() !== '' ? `.${e.className.trim().split(/\s+/).join('.')}` : '';
      parts.unshift(`${e.tagName.toLowerCase()}${cls}`);
    }
    return parts.join(' > ');
  }
  function visible(el) {
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) return false; // includes the screen-reader-only texts
    if (r.right <= 0 || r.bottom <= 0 || r.left >= document.documentElement.scrollWidth) return false; // moved off the page (the skip link)
    const cs = getComputedStyle(el);
    if (cs.visibility !== 'visible' || cs.display === 'none') return false;
    if (el.closest('[inert], [aria-hidden="true"], option, dialog:not([open])')) return false;
    return el.checkVisibility({ visibilityProperty: true });
  }

  // Every visible text under `scopeSel` against the background it is drawn on.
  function contrast(scopeSel) {
    const unmeasurable = [];
    // The opaque colour behind el's content (its and its ancestors' backgrounds composited down
    // to the white canvas) and the opacity el is drawn with.
    const background = (el) => {
      const layers = [];
      let opacity = 1;
      for (let e = el; e; e = e.parentElement) {
        const cs = getComputedStyle(e);
        opacity *= Number(cs.opacity);
        if (cs.backgroundImage !== 'none') unmeasurable.push(`${describe(e)}: background-image ${cs.backgroundImage.slice(0, 60)}`);
        const c = parse(cs.backgroundColor);
        if (c && c[3] > 0) {
          layers.push(c);
          if (c[3] >= 1) break;
        }
        // A modal dialog is drawn in the top layer: its tree ancestors are not behind it.
        if (e.tagName === 'DIALOG') break;
      }
      let bg = [255, 255, 255, 1];
      for (const l of layers.reverse()) bg = over(l, bg);
      return { bg, opacity };
    };
    const root = document.querySelector(scopeSel);
    if (!root) throw new Error(`no ${scopeSel} on the page`);
    const findings = [];
    const measure = (el, text, colour) => {
      const cs = getComputedStyle(el);
      const fg0 = parse(colour);
      if (!fg0) {
        unmeasurable.push(`${describe(el)}: colour ${colour}`);
        return;
      }
      const { bg, opacity } = background(el);
      const fg = over([fg0[0], fg0[1], fg0[2], fg0[3] * opacity], bg);
      const px = Number.parseFloat(cs.fontSize);
      const weight = Number(cs.fontWeight);
      const large = px >= 24 || (px >= 18.66 && weight >= 700);
      findings.push({ text: text.trim().slice(0, 60), where: describe(el), fg: hex(fg), bg: hex(bg), ratio: Math.round(ratio(fg, bg) * 100) / 100, need: large ? 3 : 4.5, px, weight });
    };
    const seen = new Set();
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || (n.textContent ?? '').trim() === '' || seen.has(el)) continue;
      if (['SCRIPT', 'STYLE', 'OPTION', 'TITLE', 'TEXTAREA'].includes(el.tagName)) continue;
      if (!visible(el)) continue;
      seen.add(el);
      // SVG text is painted with `fill`.
      measure(el, n.textContent ?? '', el instanceof SVGElement ? getComputedStyle(el).fill : getComputedStyle(el).color);
    }
    for (const c of root.querySelectorAll('input, select, textarea')) {
      if (!visible(c)) continue;
      if (c instanceof HTMLInputElement && !['text', 'password', 'search', 'email', 'url', 'number'].includes(c.type)) continue;
      if (c instanceof HTMLSelectElement) measure(c, c.selectedOptions[0]?.textContent ?? '', getComputedStyle(c).color);
      else if (c.value !== '') measure(c, c.value, getComputedStyle(c).color);
      else if (c.placeholder !== '') measure(c, c.placeholder, getComputedStyle(c, '::placeholder').color);
    }
    if (unmeasurable.length > 0) throw new Error(`cannot measure the contrast of: ${[...new Set(unmeasurable)].join('; ')}`);
    const sorted = [...findings].sort((a, b) => a.ratio / a.need - b.ratio / b.need);
    return { measured: findings.length, lowest: sorted[0] ?? null, failures: findings.filter((f) => f.ratio < f.need) };
  }

  // Marks the enabled, visible controls under `sel` with data-kb (a group of radio buttons is one
  // Tab stop, so its buttons share a mark), blurs the focus and scrolls to the top.
  function mark(sel) {
    const scope = document.querySelector(sel);
    if (!scope) throw new Error(`no ${sel}`);
    const els = [...scope.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')].filter((e) => {
      if (e.disabled || e.tabIndex < 0 || e.type === 'hidden') return false;
      const r = e.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && !e.closest('[inert], dialog:not([open])') && getComputedStyle(e).visibility === 'visible';
    });
    const names = [];
    const radios = new Set();
    els.forEach((e, i) => {
      const radio = e instanceof HTMLInputElement && e.type === 'radio' ? `radio:${e.name}` : null;
      const key = radio ?? `c${i}`;
      e.dataset.kb = key;
      if (radio && radios.has(radio)) return;
      if (radio) radios.add(radio);
      const label = e.getAttribute('aria-label') ?? (e.labels?.[0]?.textContent || e.textContent || '');
      names.push(`${key}|${e.tagName.toLowerCase()} "${label.trim().slice(0, 50)}"`);
    });
    document.activeElement?.blur();
    window.scrollTo(0, 0);
    return names;
  }

  // The focused element's mark and whether it shows a focus outline.
  function active() {
    const a = document.activeElement;
    if (!a || a === document.body) return null;
    const cs = getComputedStyle(a);
    return { kb: a.dataset?.kb ?? `(unmarked ${a.tagName.toLowerCase()})`, text: (a.textContent ?? '').trim(), outline: cs.outlineStyle !== 'none' && Number.parseFloat(cs.outlineWidth) >= 2 };
  }
})
