/**
 * README.md as data: its fenced code blocks with the annotation written directly above each, the
 * commands of a shell block, explicit string substitutions and JSON shape comparison.
 * @module
 */

/** One fenced code block. */
export interface Block {
  /** The info string's language (`sh`, `js`, `json`, ...). */
  readonly lang: string;
  readonly code: string;
  /** 1-based line of the opening fence. */
  readonly line: number;
  /** The text of a `<!-- readme: ... -->` comment on the line directly above the fence, if any. */
  readonly annotation: string | undefined;
}

const FENCE = /^```(\S*)\s*$/;
const ANNOTATION = /^<!--\s*readme:\s*(.*?)\s*-->$/;

/** Every fenced block of a Markdown text, in order. */
export function parseBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i] ?? '');
    if (open === null) continue;
    const end = lines.findIndex((l, j) => j > i && l.trim() === '```');
    if (end === -1) throw new Error(`README.md:${i + 1}: code block is never closed`);
    const above = ANNOTATION.exec((lines[i - 1] ?? '').trim());
    blocks.push({ lang: open[1] ?? '', code: lines.slice(i + 1, end).join('\n'), line: i + 1, annotation: above?.[1] });
    i = end;
  }
  return blocks;
}

/** The commands of a shell block: a line ending in a backslash goes on with the next; blank and comment-only lines left out. */
export function shellCommands(code: string): string[] {
  const commands: string[] = [];
  let current = '';
  for (const line of code.split('\n')) {
    if (current === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue;
    if (line.endsWith('\\')) {
      current += `${line}\n`;
      continue;
    }
    commands.push(current + line);
    current = '';
  }
  if (current !== '') commands.push(current);
  return commands;
}

/** The JSON values a shell block shows as output, in comment lines of the form `# {...}`. */
export function shownOutputs(code: string): unknown[] {
  return code
    .split('\n')
    .map((l) => /^#\s*([[{].*)$/.exec(l.trim())?.[1])
    .filter((text): text is string => text !== undefined)
    .map((text) => JSON.parse(text) as unknown);
}

/**
 * Replaces each `from` with its `to`; every `from` must occur, so a substitution cannot silently
 * stop applying when the README changes.
 */
export function substitute(code: string, replacements: ReadonlyArray<readonly [string, string]>): string {
  let out = code;
  for (const [from, to] of replacements) {
    if (!out.includes(from)) throw new Error(`substitution of '${from}' does not apply to:\n${code}`);
    out = out.split(from).join(to);
  }
  return out;
}

/** The structure of a JSON value: the same keys, nested, with each leaf replaced by its type. */
export function shapeOf(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shapeOf);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shapeOf(v)]));
  }
  return value === null ? 'null' : typeof value;
}
