/**
 * A YAML writer for configuration files that Python tools read (OmegaConf over PyYAML, i.e. YAML 1.1): nested
 * mappings and sequences of strings, numbers, booleans and null, with comments. It writes only block style, and
 * only scalars that YAML 1.1 and 1.2 read back as the same value:
 *   - a float always has a dot and a signed exponent (PyYAML's float pattern needs both: `1e-8` is a string there,
 *     `1.0e-8` a float), so a value meant as a float is marked with `yamlFloat`;
 *   - strings are plain only when they cannot be taken for anything else (no YAML 1.1 booleans like `yes`/`off`,
 *     no numbers, no `${...}` OmegaConf interpolation), otherwise double-quoted with JSON's escapes, which are a
 *     subset of YAML's.
 */
import { InputError } from '../core/errors.js';

/** A number written as a float even when it is whole (`1.0`, not `1`). */
export class YamlFloat {
  constructor(readonly value: number) {}
}

export const yamlFloat = (value: number) => new YamlFloat(value);

/** A mapping entry's comment line(s), written above it. */
export class YamlCommented {
  constructor(
    readonly comment: string,
    readonly value: YamlValue,
  ) {}
}

export const commented = (comment: string, value: YamlValue) => new YamlCommented(comment, value);

export type YamlScalar = string | number | boolean | null | YamlFloat;
export type YamlValue = YamlScalar | YamlCommented | readonly YamlValue[] | { readonly [key: string]: YamlValue };

const PLAIN = /^[A-Za-z_/.][A-Za-z0-9_./-]*$/;
/** Words YAML 1.1 reads as booleans or null. */
const RESERVED = /^(y|yes|n|no|true|false|on|off|null|~)$/i;

export function yamlString(text: string): string {
  return PLAIN.test(text) && !RESERVED.test(text) && !/^\.(inf|nan)$/i.test(text) ? text : JSON.stringify(text);
}

export function yamlNumber(value: number, asFloat: boolean): string {
  if (!Number.isFinite(value)) throw new InputError(`YAML: ${value} cannot be written as a config number`);
  if (!asFloat && Number.isSafeInteger(value)) return String(value);
  const text = String(value);
  if (!/e/i.test(text)) return text.includes('.') ? text : `${text}.0`;
  const [mantissa, exponent] = value.toExponential().split('e') as [string, string];
  return `${mantissa.includes('.') ? mantissa : `${mantissa}.0`}e${exponent.startsWith('-') ? exponent : `+${exponent.replace(/^\+/, '')}`}`;
}

function scalar(value: YamlScalar): string {
  if (value instanceof YamlFloat) return yamlNumber(value.value, true);
  if (typeof value === 'number') return yamlNumber(value, false);
  if (typeof value === 'string') return yamlString(value);
  return value === null ? 'null' : String(value);
}

const isScalar = (value: YamlValue): value is YamlScalar => value === null || typeof value !== 'object' || value instanceof YamlFloat;

function comments(text: string, indent: string): string[] {
  return text.split('\n').map((line) => `${indent}# ${line}`.trimEnd());
}

function lines(value: YamlValue, indent: string): string[] {
  if (value instanceof YamlCommented) return [...comments(value.comment, indent), ...lines(value.value, indent)];
  if (isScalar(value)) throw new InputError('YAML: a document must be a mapping');
  if (Array.isArray(value)) {
    return (value as readonly YamlValue[]).flatMap((entry): string[] => {
      const head = entry instanceof YamlCommented ? comments(entry.comment, indent) : [];
      const item = entry instanceof YamlCommented ? entry.value : entry;
      if (isScalar(item)) return [...head, `${indent}- ${scalar(item)}`];
      const [first, ...rest] = lines(item, `${indent}  `);
      if (first === undefined) return [...head, `${indent}- ${Array.isArray(item) ? '[]' : '{}'}`];
      return [...head, `${indent}- ${first.slice(indent.length + 2)}`, ...rest];
    });
  }
  return Object.entries(value as { readonly [key: string]: YamlValue }).flatMap(([key, entry]) => {
    const head: string[] = [];
    let inner = entry;
    if (inner instanceof YamlCommented) {
      head.push(...comments(inner.comment, indent));
      inner = inner.value;
    }
    const name = `${indent}${yamlString(key)}:`;
    if (isScalar(inner)) return [...head, `${name} ${scalar(inner)}`];
    const nested = lines(inner, `${indent}  `);
    return [...head, nested.length ? name : `${name} ${Array.isArray(inner) ? '[]' : '{}'}`, ...nested];
  });
}

/** The document text: `header` as comment lines, then the mapping. */
export function toYaml(document: { readonly [key: string]: YamlValue }, header?: string): string {
  return [...(header ? comments(header, '') : []), ...lines(document, '')].join('\n') + '\n';
}
